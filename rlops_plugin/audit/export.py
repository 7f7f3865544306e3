"""Export the audit trail of a registered model as JSON or a self-contained HTML page.

``rlops audit NAME --format html`` gives a reader (an auditor, a regulator) every policy update,
gate, canary step, promotion, rollback, approval and trigger in order, with who, when, why and the
numbers behind it, plus links back to the MLflow runs.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

from rlops_plugin.audit.events import AUDIT_EXPERIMENT, AuditEvent, list_events


def trail(model_name: str) -> list[dict[str, Any]]:
    """Events of ``model_name`` as dicts, oldest first."""
    return [e.to_dict() for e in list_events(model_name)]


def to_json(model_name: str) -> str:
    """The trail as a JSON document."""
    return json.dumps({"model": model_name, "exported_at": time.time(), "events": trail(model_name)}, indent=2,
                      default=str)


def to_html(model_name: str, tracking_uri: str | None = None, events: list[AuditEvent] | None = None) -> str:
    """The trail as one HTML page (no external assets)."""
    events = events if events is not None else list_events(model_name)
    experiment_id = _audit_experiment_id() if tracking_uri else None
    rows = []
    for e in events:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.time))
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(e.metrics.items()) if isinstance(v, (int, float)))
        link = f'<a href="{html.escape(tracking_uri)}/#/experiments/{experiment_id}/runs/{e.run_id}">run</a>' \
            if tracking_uri and experiment_id and e.run_id else ""
        details = html.escape(json.dumps(_brief(e.details), default=str))
        rows.append(f"<tr class='{html.escape(e.kind)}'><td>{when} UTC</td><td>{html.escape(e.kind)}</td>"
                    f"<td>{html.escape(e.model_version or '')}</td><td>{html.escape(e.decision)}</td>"
                    f"<td>{html.escape(e.actor)}</td><td>{html.escape(e.reason)}</td><td>{html.escape(metrics)}</td>"
                    f"<td><details><summary>details</summary><pre>{details}</pre></details></td><td>{link}</td></tr>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Audit trail: {html.escape(model_name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #ccc;padding:4px 6px;vertical-align:top;font-size:13px}}th{{background:#f3f3f3}}
tr.promotion td{{background:#e9f7ef}}tr.rollback td{{background:#fdecea}}tr.gate td{{background:#f4f8ff}}
pre{{white-space:pre-wrap;max-width:40em}}</style></head><body>
<h1>Audit trail of <code>{html.escape(model_name)}</code></h1>
<p>{len(events)} events. Every policy update, gate decision, canary step, promotion, rollback, approval and
retraining trigger, with who acted, why, and the numbers behind it.</p>
<table><tr><th>time</th><th>event</th><th>version</th><th>decision</th><th>actor</th><th>reason</th>
<th>metrics</th><th>details</th><th>MLflow</th></tr>{''.join(rows)}</table></body></html>"""


def _audit_experiment_id() -> str | None:
    from mlflow import MlflowClient

    experiment = MlflowClient().get_experiment_by_name(AUDIT_EXPERIMENT)
    return experiment.experiment_id if experiment else None


def _brief(details: dict[str, Any]) -> dict[str, Any]:
    """Details without the bulky parts (full policies are in the event's run)."""
    return {k: v for k, v in details.items() if k not in ("policy",)}
