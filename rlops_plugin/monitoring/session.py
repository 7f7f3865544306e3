"""A monitoring session: read a policy version's new decisions, cut windows, evaluate, log, trigger.

``MonitorSession.tick()`` reads the batches appended since the last tick, joins the feedback known
*now* (rewards arriving after their window was evaluated are not seen by it), evaluates every full
window, logs it to MLflow, checks the trigger rules and hands each window to ``on_window``
(the CLI prints it). ``rlops monitor --once`` ticks once; ``--every 60s`` ticks forever.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rlops_plugin.experience.join import JoinConfig
from rlops_plugin.experience.store import ExperienceStore
from rlops_plugin.monitoring.drift import DriftMonitor
from rlops_plugin.monitoring.errors import MonitorConfigError, MonitorError
from rlops_plugin.monitoring.frames import EpisodeCarry, add_episode_returns, attach_feedback, load_decisions
from rlops_plugin.monitoring.results import DRIFT
from rlops_plugin.monitoring.summary import WindowSummary
from rlops_plugin.monitoring.tracking import MonitoringRun
from rlops_plugin.monitoring.triggers import TriggerEngine

REPORT_MODES = ("drift", "always", "never")


@dataclass(frozen=True)
class ResolvedPolicy:
    """The policy version a monitor watches, and where it came from."""

    policy_version: str
    """As logged with each decision: ``name/version@bundle12`` (registry) or ``bundle12`` (path)."""
    model_uri: str
    model_name: str | None = None
    version: str | None = None
    alias: str | None = None

    def load_bundle(self) -> Any:
        """Download and verify the bundle (needed for rollout references)."""
        from rlops_plugin.flavor.model import load_local_model, load_model

        if self.version is None and Path(self.model_uri).is_dir():
            return load_local_model(self.model_uri)
        return load_model(self.model_uri)


def resolve_policy(ref: str) -> ResolvedPolicy:
    """Resolve ``NAME@ALIAS``, ``NAME/VERSION``, ``models:/...`` or a local model directory.

    Registry references are pinned to one version first; the policy version string is built from the
    version's ``rlops.bundle_sha`` tag (the model is downloaded only when the tag is missing).
    """
    from rlops_plugin.flavor.registry import TAG_BUNDLE_SHA, resolve_model_uri

    if Path(ref).is_dir():
        from rlops_plugin.flavor.model import load_local_model

        return ResolvedPolicy(load_local_model(ref).bundle_sha[:12], str(Path(ref).resolve()))
    uri = ref if ref.startswith("models:/") else f"models:/{ref}"
    body = uri[len("models:/"):]
    if not body or ("@" not in body and "/" not in body):
        raise MonitorConfigError(f"--model {ref!r}: write NAME@ALIAS, NAME/VERSION, models:/NAME@ALIAS or a "
                                 "local model directory")
    resolved = resolve_model_uri(uri)
    sha = resolved.tags.get(TAG_BUNDLE_SHA)
    if not sha:
        from rlops_plugin.flavor.model import load_model_with_source

        sha = load_model_with_source(resolved.download_uri).bundle.bundle_sha
    return ResolvedPolicy(f"{resolved.name}/{resolved.version}@{sha[:12]}", resolved.download_uri, resolved.name,
                          resolved.version, resolved.alias)


class MonitorSession:
    """Incremental monitoring of one policy version's decision log."""

    def __init__(self, store: ExperienceStore, monitor: DriftMonitor, *, policy_version: str | None,
                 served_model: str | None = None, model_name: str | None = None,
                 triggers: TriggerEngine | None = None, tracker: MonitoringRun | None = None,
                 reports: str = "drift", report_dir: str | Path | None = None, since_seq: int = 0,
                 pending: pd.DataFrame | None = None, join: JoinConfig | None = None,
                 on_window: Callable[[WindowSummary], None] | None = None) -> None:
        if reports not in REPORT_MODES:
            raise MonitorConfigError(f"reports must be one of {REPORT_MODES}, got {reports!r}")
        self.store = store
        self.monitor = monitor
        self.policy_version = policy_version
        self.served_model = served_model
        self.model_name = model_name
        self.triggers = triggers
        self.tracker = tracker
        self.reports = reports
        self._own_report_dir = report_dir is None
        self._report_dir = Path(report_dir) if report_dir else None
        self.last_seq = since_seq
        self.pending = pending if pending is not None else pd.DataFrame()
        self.join = join
        self.on_window = on_window
        self.carry = EpisodeCarry()
        self.next_index = 0
        self.summaries: list[WindowSummary] = []

    @property
    def report_dir(self) -> Path:
        """Where HTML reports go (a temporary folder, made on first use, unless one was given)."""
        if self._report_dir is None:
            self._report_dir = Path(tempfile.mkdtemp(prefix="rlops-monitor-"))
        return self._report_dir

    @property
    def kept_report_dir(self) -> Path | None:
        """The folder holding this session's HTML reports after :meth:`close` (``None`` if none is kept)."""
        if self._report_dir is None or (self._own_report_dir and self.tracker is not None):
            return None
        return self._report_dir

    def tick(self, now: float | None = None) -> list[WindowSummary]:
        """Read new decisions and evaluate every window that is now full; return their summaries."""
        loaded = load_decisions(self.store, policy_version=self.policy_version, model=self.served_model,
                                since_seq=self.last_seq)
        self.last_seq = loaded.last_seq
        frames = [f for f in (self.pending, loaded.frame) if not f.empty]
        rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        size = self.monitor.config.window
        full = (len(rows) // size) * size
        if full == 0:
            self.pending = rows
            return []
        ready = attach_feedback(rows.iloc[:full].reset_index(drop=True), self.store, self.join, now)
        self.carry = add_episode_returns(ready, self.carry)
        self.pending = rows.iloc[full:].reset_index(drop=True)
        out = []
        for start in range(0, full, size):
            window = ready.iloc[start:start + size]
            out.append(self._window(window))
        return out

    def _window(self, window: pd.DataFrame) -> WindowSummary:
        summary = self.monitor.evaluate(window, self.next_index, policy_version=self.policy_version,
                                        model=self.model_name)
        self.next_index += 1
        report_path = None
        if self.reports == "always" or (self.reports == "drift" and summary.status == DRIFT):
            if any(c.status in ("drift", "ok") for r in summary.signals.values() for c in r.columns):
                report_path = self.report_dir / f"window-{summary.index:06d}.html"
                self.monitor.report(window, summary, report_path)
                summary.report_path = str(report_path)
        if self.triggers is not None:
            self.triggers.observe(summary)
        if self.tracker is not None:
            self.tracker.log_window(summary, report_path)
            for event in summary.triggers:
                self.tracker.log_trigger(event)
        self.summaries.append(summary)
        if self.on_window is not None:
            self.on_window(summary)
        return summary

    def close(self) -> None:
        """Remove the temporary report folder (reports already logged to MLflow)."""
        if self._own_report_dir and self.tracker is not None and self._report_dir is not None:
            shutil.rmtree(self._report_dir, ignore_errors=True)


def require_decisions(store: ExperienceStore, policy_version: str | None, served_model: str | None) -> None:
    """Raise ``MonitorError`` naming the versions present when the store has none of ``policy_version``."""
    probe = load_decisions(store, policy_version=policy_version, model=served_model, limit=1)
    if not probe.frame.empty:
        return
    versions = sorted({p for _, b in store.iter_batches(model=served_model) for p in b.policies})
    raise MonitorError(f"no decisions of {policy_version or 'any policy'} in {store.url}"
                       + (f" (served as {served_model})" if served_model else "")
                       + (f"; versions present: {', '.join(versions[:10])}" if versions else "; the store is empty"))
