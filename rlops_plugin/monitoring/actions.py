"""Trigger actions: what ``rlops monitor --on-trigger NAME[:ARG]`` does with each trigger event.

Every event already goes to all ``rlops_on_trigger`` hook implementations; actions are the
per-invocation choice on top (log it, write it to a file, start a pipeline). An action is a callable
``action(event, arg) -> result`` where ``arg`` is the text after the first colon (or ``None``);
its result is stored on the event under the action spec. Built-ins are named below as
``module:function`` and imported only when used; add one there (the pipelines package will add
``run-pipeline``) or call :func:`register_trigger_action` at import time of your code.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rlops_plugin.monitoring.errors import MonitorConfigError

TriggerAction = Callable[[Any, str | None], Any]

BUILTIN_ACTIONS: dict[str, tuple[str, str]] = {
    "log": ("rlops_plugin.monitoring.actions:log_event",
            "log the event as one JSON line (logger rlops.monitoring.triggers, level WARNING)"),
    "jsonl": ("rlops_plugin.monitoring.actions:append_jsonl",
              "append the event as one JSON line to the file named after the colon: jsonl:PATH"),
    "run-pipeline": ("rlops_plugin.pipelines.run:trigger_action",
                     "run one continuous-improvement cycle locally (kfp.local); run-pipeline:PARAMS.json "
                     "gives its parameters (store, deployment, trainer, ...)"),
}
_registered: dict[str, tuple[TriggerAction, str]] = {}
logger = logging.getLogger("rlops.monitoring.triggers")


def log_event(event: Any, arg: str | None = None) -> str:
    """Log the event as JSON at WARNING level; returns ``"logged"``."""
    logger.warning("rlops trigger %s", json.dumps(event.to_dict(), sort_keys=True))
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


def register_trigger_action(name: str, action: TriggerAction, description: str = "") -> None:
    """Add an action under ``name`` (refused if the name is taken)."""
    if not name or ":" in name:
        raise MonitorConfigError(f"trigger action name {name!r}: non-empty and without ':'")
    if name in BUILTIN_ACTIONS or name in _registered:
        raise MonitorConfigError(f"trigger action {name!r} is already registered")
    _registered[name] = (action, description)


def unregister_trigger_action(name: str) -> None:
    """Remove an action added with :func:`register_trigger_action` (tests)."""
    _registered.pop(name, None)


def trigger_actions() -> dict[str, str]:
    """Every available action name with its description."""
    out = {name: description for name, (_, description) in BUILTIN_ACTIONS.items()}
    out.update({name: description for name, (_, description) in _registered.items()})
    return dict(sorted(out.items()))


def resolve_action(spec: str) -> Callable[[Any], Any]:
    """The callable for ``NAME[:ARG]``, with ``ARG`` bound; unknown names raise ``MonitorConfigError``."""
    name, sep, arg = str(spec).partition(":")
    if name in _registered:
        action = _registered[name][0]
    elif name in BUILTIN_ACTIONS:
        module_name, _, attr = BUILTIN_ACTIONS[name][0].partition(":")
        action = getattr(importlib.import_module(module_name), attr)
    else:
        raise MonitorConfigError(f"unknown trigger action {name!r}; available: {', '.join(trigger_actions())}")
    if name == "jsonl" and not arg:
        raise MonitorConfigError("the jsonl action needs a file: --on-trigger jsonl:PATH")
    return partial(action, arg=arg if sep else None)
