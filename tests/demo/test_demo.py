"""``rlops demo --fast`` end to end (real MLflow server, KServe predictor, kfp.local pipeline), then the browser.

The module runs the demo once, in a subprocess exactly as a user would, and the tests read what it left:
``report/result.json``, the report files, the audit trail in MLflow, and the MLflow UI in headless Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlops_plugin.audit.events import EVENT_DETAILS, MISSING_DETAILS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVERY_EVENT = {"policy_update", "gate", "deployment", "canary_step", "promotion", "approval", "trigger",
               "pipeline_cycle"}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _processes_under(root: Path) -> list[str]:
    """Command lines of live processes that mention the demo folder (servers it should have stopped)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """Run ``rlops demo --fast`` once; the result, the folder and the CLI output."""
    root = tmp_path_factory.mktemp("demo") / "run"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-m", "rlops_plugin.cli", "demo", "--fast", "--root", str(root)],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((root / "report" / "result.json").read_text())
    return {"root": root, "result": result, "stdout": proc.stdout}


def test_the_loop_closes(demo):
    """Drift fired the trigger, the gate passed a challenger, the canary promoted it, and the new champion
    does better in the changed world than the one it replaced (same episodes)."""
    result = demo["result"]
    assert result["triggered"], result
    assert result["gate_passed"] is True, result["outcome_reason"]
    assert result["challenger_version"], "no challenger was registered"
    assert result["outcome"] == "promoted", result["outcome_reason"]
    assert result["final_version"] == result["challenger_version"]
    initial, final = result["returns"]["initial"], result["returns"]["final"]
    assert final["shifted"] > initial["shifted"], result["returns"]


def test_every_stage_was_shown(demo):
    """One line per loop stage, and the report path printed at the end."""
    out = demo["stdout"]
    for n in range(1, 10):
        assert f"[{n}/9]" in out
    assert str(demo["root"] / "report" / "index.html") in out


def test_audit_trail_has_every_event(demo):
    """Update, gate, deployment, canary steps, promotion or rollback, approval, trigger, the cycle."""
    result = demo["result"]
    kinds = set(result["event_kinds"])
    assert EVERY_EVENT <= kinds, sorted(EVERY_EVENT - kinds)
    trail = json.loads((demo["root"] / "report" / "audit.json").read_text())
    stored = {event["kind"] for event in trail["events"]}
    assert kinds == stored
    for event in trail["events"]:  # one shape per kind, and every writer gave all of it (docs/audit.md)
        assert set(EVENT_DETAILS[event["kind"]]) <= set(event["details"]), event
        assert MISSING_DETAILS not in event["details"], event
    update = next(e for e in trail["events"] if e["kind"] == "policy_update"
                  and e["model_version"] == result["challenger_version"])
    assert update["details"]["dataset_digest"] and update["details"]["hashes"]["bundle"]
    assert update["details"]["lineage"]["parent_version"] == result["initial_version"]
    assert {"eval/return_mean", "gate/regression/champion_return", "gate/regression/candidate_return"} <= \
        set(update["metrics"])
    # the fine-tuning trained in the physics the calibration fitted to the logs, not in the known shift
    calibration = update["details"]["calibration"]
    assert calibration == update["details"]["lineage"]["calibration"]
    assert calibration["params"]["masscart"] == pytest.approx(2.5, rel=0.02)  # the demo's default world change
    assert calibration["transitions"] >= 400 and calibration["rmse_fit"] < calibration["rmse_prior"]
    assert update["metrics"]["calibration/masscart"] == calibration["params"]["masscart"]
    trained_on = update["details"]["lineage"]["trainer_config"]["extra_randomization"]["masscart"]
    assert trained_on["low"] < calibration["params"]["masscart"] < trained_on["high"]
    assert "calibrated from production logs" in update["reason"]
    for event in trail["events"]:
        assert event["actor"] and event["time"] and event["reason"], event


def test_report_files(demo):
    """Self-contained page with its plots, PNGs beside it, and the Evidently reports it links to."""
    report = demo["root"] / "report"
    page = (report / "index.html").read_text()
    for png in ("returns.png", "drift.png", "canary.png", "champions.png"):
        assert (report / png).stat().st_size > 5_000, png
    assert page.count("data:image/png;base64,") == 4
    assert demo["result"]["tracking_uri"] in page
    assert list((demo["root"] / "monitoring").glob("window-*.html"))
    assert (report / "audit.html").exists()


def test_everything_was_stopped(demo):
    """No MLflow server, policy server or pipeline process outlives the demo."""
    assert _processes_under(demo["root"]) == []


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from Debian's package (scripts/system-deps.sh installs it), driven by Playwright."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run `bash scripts/system-deps.sh` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                          "--disable-background-networking", "--disable-component-update",
                                          "--disable-sync"])
        yield chrome
        chrome.close()


def test_mlflow_ui_shows_versions_with_lineage(demo, browser):
    """The demo's MLflow server, restarted on its own data, shows the challenger with its lineage tags."""
    from rlops_plugin.local.mlflow_server import LocalMlflowServer

    result = demo["result"]
    with LocalMlflowServer(demo["root"] / "mlflow") as server:
        page = browser.new_page()
        page.goto(f"{server.url}/#/models/{result['model_name']}")
        page.get_by_text(f"Version {result['challenger_version']}").first.wait_for(timeout=60_000)
        page.goto(f"{server.url}/#/models/{result['model_name']}/versions/{result['challenger_version']}")
        for text in ("rlops.parent_version", "rlops.dataset_digest", "rlops.trainer", "rlops.gate",
                     "rlops.calibration"):
            page.get_by_text(text).first.wait_for(timeout=60_000)
        body = page.inner_text("body")
        assert "cql+sim_finetune" in body
        page.close()


def test_report_page_renders_its_plots(demo, browser):
    """The report's own script counts the images the browser actually decoded."""
    page = browser.new_page()
    page.goto((demo["root"] / "report" / "index.html").as_uri())
    page.get_by_text("plots: 4 of 4 rendered").wait_for(timeout=30_000)
    assert page.locator("img").count() >= 4
    page.close()
