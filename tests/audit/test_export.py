"""The audit page from its jinja2 template, without MLflow: every value escaped, same rows and numbers."""

from __future__ import annotations

from rlops_plugin.audit.events import AuditEvent
from rlops_plugin.audit.export import to_html

SCRIPT = "<script>alert(1)</script>"


def test_values_are_escaped_and_rows_complete(monkeypatch):
    import rlops_plugin.audit.export as export

    monkeypatch.setattr(export, "_audit_experiment_id", lambda: "7")
    events = [AuditEvent("approval", f"m{SCRIPT}", "2", decision="approved", actor=SCRIPT, reason=f"because {SCRIPT}",
                         metrics={"gate/passed": 1.0, "p": 0.123456, "note": "x"}, details={"note": SCRIPT},
                         time=1000.0, run_id="r1"),
              AuditEvent("rollback", "m", None, decision="rolled back", reason="manual rollback", time=2000.0)]
    page = to_html(f"m{SCRIPT}", tracking_uri="http://mlflow:5000", events=events)
    assert SCRIPT not in page and page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 5  # title h1 actor reason
    assert "<tr class='approval'>" in page and "<tr class='rollback'>" in page and "2 events." in page
    assert "1970-01-01 00:16:40 UTC" in page and "gate/passed=1, p=0.1235" in page
    assert '<a href="http://mlflow:5000/#/experiments/7/runs/r1">run</a>' in page and page.count(">run</a>") == 1
    assert "manual rollback" in page and page.rstrip().endswith("</table></body></html>")
