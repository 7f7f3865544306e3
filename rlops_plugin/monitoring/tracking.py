"""MLflow logging of a monitoring session: one run linked to the model version, metrics per window.

The run carries tags naming what it watches (``rlops.model_name``, ``rlops.model_version``,
``rlops.model_alias``, ``rlops.policy_version``), the config and calibrated thresholds as artifacts;
each window logs its metrics with ``step`` = window index (so the MLflow UI plots them over time),
``windows/NNNNNN/summary.json`` and, when built, ``windows/NNNNNN/report.html``; each trigger event
logs ``triggers/NNNNNN-<rule>.json`` and a ``trigger`` audit event. The model version gets the tag
``rlops.monitoring_run_id`` (the latest monitoring run), so the registry UI links to it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from rlops_plugin.monitoring.errors import MonitorError
from rlops_plugin.monitoring.summary import WindowSummary

DEFAULT_EXPERIMENT = "rlops-monitoring"
TAG_MODEL_NAME, TAG_MODEL_VERSION, TAG_MODEL_ALIAS, TAG_POLICY_VERSION = (
    "rlops.model_name", "rlops.model_version", "rlops.model_alias", "rlops.policy_version")
TAG_MONITORING_RUN = "rlops.monitoring_run_id"


class MonitoringRun:
    """The MLflow run of one ``rlops monitor`` session."""

    def __init__(self, *, policy_version: str, model_name: str | None = None, model_version: str | None = None,
                 model_alias: str | None = None, experiment: str = DEFAULT_EXPERIMENT,
                 run_name: str | None = None, extra_tags: dict[str, str] | None = None) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient()
        self.policy_version = policy_version
        self.model_name, self.model_version, self.model_alias = model_name, model_version, model_alias
        self.experiment = experiment
        self.run_name = run_name or (f"monitor-{model_name}-v{model_version}" if model_version
                                     else f"monitor-{policy_version}")
        self.extra_tags = dict(extra_tags or {})
        self.run_id: str | None = None

    def start(self, config: dict[str, Any] | None = None, calibration: dict[str, Any] | None = None,
              params: dict[str, Any] | None = None) -> str:
        """Create the run with its tags, params, config and calibration; link the model version to it."""
        experiment = self.client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)
        tags = {"mlflow.runName": self.run_name, "rlops.monitor": "drift", TAG_POLICY_VERSION: self.policy_version,
                **self.extra_tags}
        for key, value in ((TAG_MODEL_NAME, self.model_name), (TAG_MODEL_VERSION, self.model_version),
                           (TAG_MODEL_ALIAS, self.model_alias)):
            if value:
                tags[key] = str(value)
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        if params:
            self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        if config is not None:
            self.client.log_dict(self.run_id, config, "monitor_config.json")
        if calibration is not None:
            self.client.log_dict(self.run_id, calibration, "calibration.json")
        if self.model_name and self.model_version:
            self.client.set_model_version_tag(self.model_name, self.model_version, TAG_MONITORING_RUN, self.run_id)
        return self.run_id

    def log_window(self, summary: WindowSummary, report_path: str | Path | None = None) -> None:
        """Metrics (step = window index), the JSON summary, and the HTML report when there is one."""
        from mlflow.entities import Metric

        run_id = self._require()
        stamp = int((summary.end_ts or time.time()) * 1000)
        metrics = [Metric(key, value, stamp, summary.index) for key, value in summary.metrics().items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start:start + 1000])
        folder = f"windows/{summary.index:06d}"
        if report_path is not None:
            self.client.log_artifact(run_id, str(report_path), folder)
            summary.report_path = f"{folder}/{Path(report_path).name}"
        self.client.log_dict(run_id, summary.to_dict(), f"{folder}/summary.json")

    def log_trigger(self, event: Any) -> None:
        """The trigger event as ``triggers/NNNNNN-<rule>.json``."""
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", event.rule)
        self.client.log_dict(self._require(), event.to_dict(), f"triggers/{event.window:06d}-{name}.json")

    def audit_trigger(self, event: Any) -> None:
        """A ``trigger`` event in the model's audit trail (before the trigger's actions run), linking this run."""
        from rlops_plugin.audit.events import AuditEvent, record_event

        if not self.model_name:
            return
        evidence = event.to_dict()["evidence"]
        metrics = {f"evidence/{k}": float(v) for k, v in evidence.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        record_event(AuditEvent("trigger", self.model_name, self.model_version, actor="rlops:monitor",
                                decision=event.rule, reason=f"{event.rule} fired on window {event.window} of "
                                                            f"{event.policy_version}",
                                metrics=metrics, time=event.time,
                                details={"trigger": event.to_dict(), "monitoring_run_id": self.run_id}))

    def end(self, status: str = "FINISHED") -> None:
        """Close the run (``FINISHED``, ``FAILED`` or ``KILLED``)."""
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)

    def _require(self) -> str:
        if self.run_id is None:
            raise MonitorError("MonitoringRun.start() was not called")
        return self.run_id


def redact_url(url: str) -> str:
    """``url`` without a password (store URLs go into run tags)."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
    return urlunparse(parsed._replace(netloc=netloc))
