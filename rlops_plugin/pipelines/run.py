"""Run a pipeline (continuous improvement, monitor and improve, agent improvement) locally (``kfp.local``)
or submit it to Kubeflow.

Locally every component runs as a subprocess of this Python (``SubprocessRunner(use_venv=False)``),
so the installed rlops and the local MLflow server, store and ``rlops-local`` deployment are used
as they are. On a cluster, ``kfp.Client`` uploads the compiled pipeline and starts a run, or
creates a recurring run for scheduled retraining.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from rlops_plugin.errors import RLOpsError


class PipelineError(RLOpsError):
    """The pipeline could not run or be submitted."""


def run_local(arguments: dict[str, Any], pipeline_root: str | Path = ".rlops/kfp",
              tracking_uri: str | None = None, pipeline: str = "continuous_improvement") -> dict[str, Any]:
    """Execute one run of ``pipeline`` (one of :data:`PIPELINES`) with ``kfp.local``; returns the wall
    time and the task outcome."""
    from kfp import local

    func = pipeline_function(pipeline)
    tracking = tracking_uri or arguments.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking:
        raise PipelineError("set MLFLOW_TRACKING_URI (or pass tracking_uri) to the MLflow server of the model")
    os.environ["MLFLOW_TRACKING_URI"] = tracking
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(Path(pipeline_root).resolve()),
               raise_on_error=True)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # the components name our image; running its code in this (same) environment is the point here
            warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
            task = func(**{"tracking_uri": tracking, **arguments})
    except RuntimeError as exc:
        raise PipelineError(f"pipeline failed: {exc}") from exc
    return {"wall_s": time.perf_counter() - start, "state": str(getattr(task, "state", "")),
            "pipeline_root": str(Path(pipeline_root).resolve())}


PIPELINES = ("continuous_improvement", "monitor_and_improve", "agent_improvement")
"""Pipelines shipped with rlops: ``rlops_plugin/pipelines/<name>.py`` defines ``<name>``."""


def pipeline_function(name: str) -> Any:
    """The ``@dsl.pipeline`` function called ``name`` (one of :data:`PIPELINES`)."""
    import importlib

    if name not in PIPELINES:
        raise PipelineError(f"unknown pipeline {name!r}; known: {', '.join(PIPELINES)}")
    return getattr(importlib.import_module(f"rlops_plugin.pipelines.{name}"), name)


def submit(host: str, arguments: dict[str, Any], experiment: str = "rlops", run_name: str | None = None,
           cron: str | None = None, namespace: str | None = None, service_account: str | None = None,
           client: Any = None, pipeline: str = "continuous_improvement") -> dict[str, str]:
    """Upload and start ``pipeline`` on Kubeflow (``cron`` makes it a recurring run instead)."""
    import kfp
    from kfp import compiler

    func = pipeline_function(pipeline)
    client = client or kfp.Client(host=host, namespace=namespace or "kubeflow")
    with tempfile.TemporaryDirectory() as tmp:
        package = str(Path(tmp) / f"{pipeline}.yaml")
        compiler.Compiler().compile(func, package)
        if cron:
            exp = client.create_experiment(experiment, namespace=namespace)
            default_name = f"rlops-{pipeline.replace('_', '-')}-scheduled"
            job = client.create_recurring_run(exp.experiment_id, run_name or default_name,
                                              cron_expression=cron, params=arguments, pipeline_package_path=package,
                                              service_account=service_account, max_concurrency=1, no_catchup=True)
            return {"recurring_run_id": job.recurring_run_id, "experiment_id": exp.experiment_id}
        result = client.create_run_from_pipeline_package(package, arguments=arguments, run_name=run_name,
                                                         experiment_name=experiment, namespace=namespace,
                                                         service_account=service_account)
        return {"run_id": result.run_id}


def trigger_action(event: Any, arg: str | None = None) -> dict[str, Any]:
    """``rlops monitor --on-trigger run-pipeline:PARAMS.json``: one local cycle for the triggering model.

    ``PARAMS.json`` holds the pipeline parameters (``store`` at least; ``deployment``, ``trainer``,
    ``promotion_json``, ...); ``model_name`` defaults to the event's model, ``pipeline`` (one of
    :data:`PIPELINES`) to ``continuous_improvement``, ``pipeline_root`` to ``.rlops/kfp``.
    """
    import json

    params: dict[str, Any] = json.loads(Path(arg).read_text()) if arg else {}
    params.setdefault("model_name", getattr(event, "model", None))
    if not params.get("model_name") or not params.get("store"):
        raise PipelineError("run-pipeline needs model_name and store: --on-trigger run-pipeline:PARAMS.json")
    pipeline_root = params.pop("pipeline_root", ".rlops/kfp")
    pipeline = params.pop("pipeline", "continuous_improvement")
    if pipeline not in PIPELINES:
        raise PipelineError(f"run-pipeline: pipeline {pipeline!r} is not one of {list(PIPELINES)}")
    return run_local(params, pipeline_root, pipeline=pipeline)
