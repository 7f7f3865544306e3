"""The audit trail on a real MLflow server: events, approvals, rollbacks, JSON and HTML export."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest

from rlops_plugin import flavor
from rlops_plugin.audit.approvals import approve
from rlops_plugin.audit.events import AuditEvent, list_events, record_event
from rlops_plugin.audit.export import to_html

pytestmark = pytest.mark.integration
RLOPS = [sys.executable, "-m", "rlops_plugin.cli"]


@pytest.fixture
def two_versions(tracking, model_name, cartpole_bundle):
    for _ in range(2):
        with mlflow.start_run():
            flavor.log_model(cartpole_bundle, name="policy", registered_model_name=model_name)
    flavor.promote(model_name, 1)
    flavor.promote(model_name, 2)
    return model_name


def rlops(args, tracking):
    proc = subprocess.run(RLOPS + args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": tracking, "RLOPS_ACTOR": "user:ci"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_events_round_trip_in_order_and_unknown_kinds_fail(two_versions):
    name = two_versions
    first = record_event(AuditEvent("gate", name, "2", decision="passed", reason="all checks passed",
                                    metrics={"gate/passed": 1.0, "bad": float("nan")}, time=1000.0))
    record_event(AuditEvent("promotion", name, "2", decision="promoted", reason="canary won", time=2000.0))
    events = list_events(name)
    assert [e.kind for e in events] == ["gate", "promotion"] and events[0].event_id == first.event_id
    assert events[0].metrics["gate/passed"] == 1.0 and events[0].run_id == first.run_id
    assert [e.kind for e in list_events(name, kinds=["promotion"])] == ["promotion"]
    with pytest.raises(ValueError, match="unknown audit event kind 'promoted'"):
        record_event(AuditEvent("promoted", name))
    assert list_events("no-such-model") == []


def test_approve_rollback_and_export_from_the_shell(two_versions, tracking, tmp_path):
    name = two_versions
    out = rlops(["approve", name, "2", "--by", "alice@example.com", "--note", "reviewed canary report"], tracking)
    assert f"{name} version 2 approved by alice@example.com" in out
    tags = flavor.registry.client().get_model_version(name, "2").tags
    assert tags["rlops.approval.by"] == "alice@example.com" and tags["rlops.approval.note"] == "reviewed canary report"
    rlops(["rollback", name], tracking)
    assert flavor.get_alias_version(name, "champion") == "1"
    trail = json.loads(rlops(["audit", name], tracking))
    kinds = [(e["kind"], e["model_version"], e["actor"]) for e in trail["events"]]
    assert kinds == [("approval", "2", "alice@example.com"), ("rollback", "1", "user:ci")]
    assert trail["events"][1]["details"] == {"deployment": None, "from": "2", "to": "1"}
    rlops(["audit", name, "--format", "html", "--out", str(tmp_path / "audit.html")], tracking)
    page = (tmp_path / "audit.html").read_text()
    assert "<tr class='approval'>" in page and "reviewed canary report" in page and "manual rollback" in page


def test_library_approval_and_html_escaping(two_versions, tracking):
    name = two_versions
    event = approve(name, 1, actor="<script>x</script>", note="ok")
    assert event.kind == "approval" and event.actor == "<script>x</script>"
    page = to_html(name, tracking_uri=tracking)
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page
    experiment_id = mlflow.get_experiment_by_name("rlops-audit").experiment_id
    assert f"{tracking}/#/experiments/{experiment_id}/runs/{event.run_id}" in page
    with pytest.raises(mlflow.exceptions.MlflowException):
        approve(name, 99)


def test_every_event_kind_has_one_documented_shape():
    """docs/audit.md lists each kind with exactly the details keys of its one shape (EVENT_DETAILS)."""
    from rlops_plugin.audit.events import EVENT_DETAILS, EVENT_KINDS
    from tests.conftest import REPO_ROOT

    docs = (REPO_ROOT / "docs" / "audit.md").read_text().split("## Event kinds", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip().strip("`"): line.split("|")[3] for line in docs.splitlines()
            if line.startswith("| `")}
    assert set(rows) == set(EVENT_KINDS)
    for kind, keys in EVENT_DETAILS.items():
        documented = {part.strip().strip("`") for part in rows[kind].split(",") if part.strip()}
        assert documented == set(keys), kind


def test_an_event_missing_details_keeps_the_shape_and_says_so(tracking, model_name):
    from rlops_plugin.audit.events import MISSING_DETAILS

    record_event(AuditEvent("rollback", model_name, "1", details={"deployment": "d"}))
    (event,) = list_events(model_name)
    assert event.details == {"deployment": "d", "from": None, "to": None, MISSING_DETAILS: ["from", "to"]}


def _event_json(run_id):
    path = mlflow.MlflowClient().download_artifacts(run_id, "event.json")
    with open(path) as fh:
        return json.load(fh)


def _rewrite(run_id, data):
    """What an editor with write access to MLflow does: replace the run's event.json."""
    mlflow.MlflowClient().log_text(run_id, json.dumps(data, indent=2), "event.json")


def _verify(name, tracking):
    proc = subprocess.run(RLOPS + ["audit", "verify", name, "--json"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": tracking})
    return proc.returncode, json.loads(proc.stdout)


def test_the_trail_is_a_hash_chain_that_verify_checks(two_versions, tracking):
    name = two_versions
    for version in ("1", "2", "2"):
        record_event(AuditEvent("gate", name, version, decision="passed", metrics={"delta": 1.5}))
    events = list_events(name)
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]] and events[0].prev_hash == ""
    assert flavor.registry.client().get_registered_model(name).tags["rlops.audit.head"] == events[-1].hash
    code, report = _verify(name, tracking)
    assert code == 0 and report["verified"] and report["chained"] == 3, report
    assert "audit chain verified (3 chained events)" in rlops(["audit", "verify", name], tracking)
    assert json.loads(rlops(["audit", name], tracking))["events"][0]["hash"] == events[0].hash  # export unchanged


@pytest.mark.parametrize("tamper", ["edit", "edit_and_rehash", "delete_middle", "delete_last", "retag"])
def test_verify_reports_the_first_broken_link(two_versions, tracking, tamper):
    name = two_versions
    for version in ("1", "2", "2"):
        record_event(AuditEvent("gate", name, version, decision="failed", reason="regression"))
    events = list_events(name)
    client = mlflow.MlflowClient()
    target = events[1] if tamper != "delete_last" else events[-1]
    if tamper in ("edit", "edit_and_rehash"):
        data = _event_json(target.run_id)
        data["decision"] = "passed"
        if tamper == "edit_and_rehash":  # a careful editor recomputes the hash and the tag too
            from rlops_plugin.audit.events import event_hash

            data["hash"] = event_hash(data)
            client.set_tag(target.run_id, "rlops.event_hash", data["hash"])
            client.set_tag(target.run_id, "rlops.decision", "passed")
        _rewrite(target.run_id, data)
    elif tamper == "retag":
        client.set_tag(target.run_id, "rlops.decision", "passed")  # an edit in the MLflow UI
    else:
        client.delete_run(target.run_id)
    code, report = _verify(name, tracking)
    assert code == 1 and not report["verified"], report
    expected = {"edit": ("was edited", target), "edit_and_rehash": ("no event of the trail has", events[2]),
                "delete_middle": ("an earlier event was deleted", events[2]),
                "delete_last": ("the last event(s) were deleted", None),
                "retag": ("disagrees with its event.json", target)}[tamper]
    assert expected[0] in report["first_break"]["problem"]
    assert report["first_break"]["run_id"] == (expected[1].run_id if expected[1] else None)
