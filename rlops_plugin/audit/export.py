"""Export the audit trail of a registered model as JSON or a self-contained HTML page.

``rlops audit NAME --format html`` gives a reader (an auditor, a regulator) every policy update,
gate, canary step, promotion, rollback, approval and trigger in order, with who, when, why and the
numbers behind it, plus links back to the MLflow runs.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import jinja2

from rlops_plugin.audit.events import AUDIT_EXPERIMENT, AuditEvent, list_events


def trail(model_name: str) -> list[dict[str, Any]]:
    """Events of ``model_name`` as dicts, oldest first."""
    return [e.to_dict() for e in list_events(model_name)]


def to_json(model_name: str) -> str:
    """The trail as a JSON document."""
    return json.dumps({"model": model_name, "exported_at": time.time(), "events": trail(model_name)}, indent=2,
                      default=str)


def to_html(model_name: str, tracking_uri: str | None = None, events: list[AuditEvent] | None = None) -> str:
    """The trail as one HTML page (no external assets); every value is escaped by the template."""
    events = events if events is not None else list_events(model_name)
    experiment_id = _audit_experiment_id() if tracking_uri else None
    rows = [{
        "kind": e.kind, "when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.time)),
        "version": e.model_version or "", "decision": e.decision, "actor": e.actor, "reason": e.reason,
        "metrics": ", ".join(f"{k}={v:.4g}" for k, v in sorted(e.metrics.items()) if isinstance(v, (int, float))),
        "details": json.dumps(_brief(e.details), default=str),
        "href": f"{tracking_uri}/#/experiments/{experiment_id}/runs/{e.run_id}"
        if tracking_uri and experiment_id and e.run_id else None,
    } for e in events]
    return render_html("audit.html", model_name=model_name, rows=rows)


def render_html(template: str, **context: Any) -> str:
    """Render one of rlops' HTML templates (package data under ``rlops_plugin/templates``), escaped."""
    return _templates().get_template(template).render(**context)


@functools.cache
def _templates() -> jinja2.Environment:
    """The template environment: autoescaping on, and undefined names fail instead of rendering empty."""
    return jinja2.Environment(loader=jinja2.PackageLoader("rlops_plugin", "templates"),
                              autoescape=jinja2.select_autoescape(), undefined=jinja2.StrictUndefined)


def _audit_experiment_id() -> str | None:
    from mlflow import MlflowClient

    experiment = MlflowClient().get_experiment_by_name(AUDIT_EXPERIMENT)
    return experiment.experiment_id if experiment else None


def _brief(details: dict[str, Any]) -> dict[str, Any]:
    """Details without the bulky parts (full policies are in the event's run)."""
    return {k: v for k, v in details.items() if k not in ("policy",)}
