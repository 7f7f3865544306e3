"""``rlops demo agent --fast`` end to end (real MLflow server, KServe OpenAI data plane, kfp.local pipeline).

The module runs the demo once, in a subprocess exactly as a user would, and the tests read what it left:
``report/result.json``, the report files, the audit trail and the post-market report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rlops_plugin.audit.events import EVENT_DETAILS, MISSING_DETAILS
from tests.demo.test_demo import _processes_under

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVERY_EVENT = {"policy_update", "gate", "deployment", "canary_step", "promotion", "approval", "trigger",
               "pipeline_cycle"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """Run ``rlops demo agent --fast`` once; the result, the folder and the CLI output."""
    root = tmp_path_factory.mktemp("demo-agent") / "run"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-m", "rlops_plugin.cli", "demo", "agent", "--fast", "--root", str(root)],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((root / "report" / "result.json").read_text())
    return {"root": root, "result": result, "stdout": proc.stdout}


def test_the_agent_loop_closes(demo):
    """The ratings drift fired the trigger, the gate passed a challenger, shadow and canary promoted it, and the
    new champion routes more of the new world's task suite right than the one it replaced (greedy, same tasks)."""
    result = demo["result"]
    assert result["triggered"] and result["trigger_rule"].startswith("drift:ratings"), result
    assert result["gate_passed"] is True, result["outcome_reason"]
    assert result["challenger_version"], "no challenger was registered"
    assert result["outcome"] == "promoted", result["outcome_reason"]
    assert result["final_version"] == result["challenger_version"]
    initial, final = result["success"]["initial"], result["success"]["final"]
    assert final["new world"] > initial["new world"], result["success"]
    assert all(result["redteam"]["final"].values()), result["redteam"]


def test_every_stage_was_shown(demo):
    out = demo["stdout"]
    for n in range(1, 10):
        assert f"[{n}/9]" in out
    assert str(demo["root"] / "report" / "index.html") in out


def test_audit_trail_has_every_event_with_lineage(demo):
    """Update, gate, deployment, shadow/canary steps, approval, promotion, trigger and the cycle, each complete."""
    result = demo["result"]
    kinds = set(result["event_kinds"])
    assert EVERY_EVENT <= kinds, sorted(EVERY_EVENT - kinds)
    trail = json.loads((demo["root"] / "report" / "audit.json").read_text())
    for event in trail["events"]:
        assert set(EVENT_DETAILS[event["kind"]]) <= set(event["details"]), event
        assert MISSING_DETAILS not in event["details"], event
        assert event["actor"] and event["time"] and event["reason"], event
    update = next(e for e in trail["events"] if e["kind"] == "policy_update"
                  and e["model_version"] == result["challenger_version"])
    assert update["details"]["dataset_digest"] and update["details"]["lineage"]["parent_version"] == \
        result["initial_version"]
    steps = [e["decision"] for e in trail["events"] if e["kind"] == "canary_step"
             and e["model_version"] == result["challenger_version"]]
    assert steps[:3] == ["started", "awaiting_canary_approval", "canary"], steps  # approval before any user
    approval = next(e for e in trail["events"] if e["kind"] == "approval")
    promotion = next(e for e in trail["events"] if e["kind"] == "promotion"
                     and e["model_version"] == result["challenger_version"])
    assert approval["time"] < promotion["time"]
    assert promotion["metrics"]["shadow_answers"] >= 30 and promotion["metrics"]["reward_diff"] > 0


def test_post_market_report_lists_every_event_of_the_run(demo):
    report = demo["root"] / "report"
    post = json.loads((report / "post-market.json").read_text())
    trail = json.loads((report / "audit.json").read_text())
    listed = {(e["kind"], e["time"]) for e in post["events"]}
    assert {(e["kind"], e["time"]) for e in trail["events"]} <= listed
    versions = {v["version"] for v in post["versions"]}
    assert {demo["result"]["initial_version"], demo["result"]["final_version"]} <= versions
    assert "post-market" in (report / "post-market.html").read_text().lower()


def test_report_files(demo):
    report = demo["root"] / "report"
    page = (report / "index.html").read_text()
    for png in ("success.png", "drift.png", "canary.png", "champions.png"):
        assert (report / png).stat().st_size > 5_000, png
    assert page.count("data:image/png;base64,") == 4
    assert "<h2>Red team</h2>" in page and all(case in page for case in demo["result"]["redteam"]["final"])
    assert demo["result"]["tracking_uri"] in page and "/traces" in page
    assert list((demo["root"] / "monitoring").glob("window-*.html"))


def test_everything_was_stopped(demo):
    assert _processes_under(demo["root"]) == []
