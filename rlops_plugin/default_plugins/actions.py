"""Built-in trigger actions: what ``rlops monitor --on-trigger NAME[:ARG]`` does with each trigger event.

Every event already goes to all ``rlops_on_trigger`` hook implementations; actions are the
per-invocation choice on top (log it, write it to a file, start a pipeline). They come through the
``rlops_register_trigger_actions`` hook like a third-party plugin's: ``action(event, arg=None,
**settings)`` where ``arg`` is the text after the first colon (or ``None``) and ``settings`` the
action's own keyword settings (``ActionSpec.settings``); its result is stored on the event under
the action spec. ``submit-pipeline`` is a dispatch action (``dispatch_action``): it runs before the
trigger's audit event is written, so the event records the KFP run it started, or why it could not.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rlops_plugin.hookspecs import Register, hookimpl
from rlops_plugin.monitoring.config import MonitorConfigError
from rlops_plugin.monitoring.triggers import dispatch_action

logger = logging.getLogger("rlops.monitoring.triggers")


def log_event(event: Any, arg: str | None = None, *, level: str | int = "WARNING") -> str:
    """Log the event as JSON (logger ``rlops.monitoring.triggers``, WARNING unless ``level``); returns ``"logged"``."""
    number = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(number, int):
        raise MonitorConfigError(f"trigger action 'log': level {level!r} is not a logging level")
    logger.log(number, "rlops trigger %s", json.dumps(event.to_dict(), sort_keys=True))
    return "logged"


def append_jsonl(event: Any, arg: str | None = None) -> str:
    """Append the event to the JSON-lines file ``arg``; returns the path."""
    if not arg:
        raise MonitorConfigError("the jsonl action needs a file: --on-trigger jsonl:PATH")
    path = Path(arg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(event.to_dict(), sort_keys=True) + "\n")
    return str(path)


def run_pipeline(event: Any, arg: str | None = None) -> dict[str, Any]:
    """Run one continuous-improvement cycle locally (kfp.local) with the parameters in the JSON file ``arg``."""
    from rlops_plugin.pipelines.run import trigger_action  # kfp: imported only when a trigger fires

    return trigger_action(event, arg)


@dispatch_action
def submit_pipeline(event: Any, arg: str | None = None) -> dict[str, Any]:
    """Submit one pipeline run to Kubeflow Pipelines (``kfp.Client``) with the parameters and host in ``arg``;
    returns the run id and URL."""
    from rlops_plugin.pipelines.submit import trigger_action  # kfp: imported only when a trigger fires

    return trigger_action(event, arg)


@hookimpl
def rlops_register_trigger_actions(register: Register) -> None:
    """Register the built-in actions; each declares the settings it accepts, so unknown keys are refused."""
    register("log", log_event, settings=("level",),
             description="log the event as one JSON line (logger rlops.monitoring.triggers, level WARNING; "
                         "setting level)")
    register("jsonl", append_jsonl, settings=(), needs_arg="a file: --on-trigger jsonl:PATH",
             description="append the event as one JSON line to the file named after the colon: jsonl:PATH")
    register("run-pipeline", run_pipeline, settings=(),
             description="run one continuous-improvement cycle locally (kfp.local); run-pipeline:PARAMS.json "
                         "gives its parameters (store, deployment, trainer, ...)")
    register("submit-pipeline", submit_pipeline, settings=(),
             needs_arg="a parameters file: --on-trigger submit-pipeline:PARAMS.json",
             description="submit one run of a pipeline to Kubeflow Pipelines (kfp.Client); "
                         "submit-pipeline:PARAMS.json gives its parameters and host, namespace, experiment, "
                         "pipeline, token_env/token_file (or KFP_HOST, KFP_NAMESPACE, KFP_TOKEN, ...); the "
                         "trigger's audit event records the run id and URL")
