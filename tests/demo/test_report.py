"""The demo report page from its jinja2 template: sections, numbers and inline plots, values escaped."""

from __future__ import annotations

from types import SimpleNamespace

from rlops_plugin.audit.events import AuditEvent
from rlops_plugin.demo import report

SCRIPT = "<script>alert(1)</script>"


def test_page_escapes_model_and_reasons(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "experiment_ids", lambda names: {"rlops-monitoring": "3"})
    (tmp_path / "monitoring").mkdir()
    (tmp_path / "monitoring" / "window-004.html").write_text("x")
    pngs = {}
    for name in report.PLOTS:
        pngs[name] = tmp_path / f"{name}.png"
        pngs[name].write_bytes(b"\x89PNG" + name.encode())
    model = f"cp{SCRIPT}"
    result = SimpleNamespace(
        model_name=model, tracking_uri="http://127.0.0.1:5000/", root=str(tmp_path), initial_version="1",
        challenger_version="2", final_version="2", triggered=True, trigger_window=4, gate_passed=True,
        outcome="promoted", wall_s=123.4, pipeline_wall_s=45.6, stage_seconds={"[1/9] mlflow": 1.23},
        monitoring_run_id="run9", returns={"initial": {"nominal": 500.0, "shifted": 120.5},
                                           "final": {"nominal": 480.0, "shifted": 300.0}})
    config = SimpleNamespace(shift={"length": 1.5}, trigger="reward", final_eval_episodes=20,
                             to_dict=lambda: {"model": model})
    events = [
        AuditEvent("gate", model, "2", decision="passed", actor="ci", reason="ok", time=1100.0,
                   details={"candidate": "m/2", "champion": "m/1",
                            "checks": [{"name": "safety", "passed": False, "reason": SCRIPT}]}),
        AuditEvent("canary_step", model, "2", decision="continue", actor="canary", reason=f"looks {SCRIPT}",
                   time=1200.0, metrics={"fraction": 0.1, "reward_diff": 3.25, "reward_diff_ci_low": -1.0,
                                         "reward_diff_ci_high": 7.5, "champion_reward_mean": 100.0,
                                         "challenger_reward_mean": 103.25, "challenger_decisions": 10.0,
                                         "champion_decisions": 90.0}),
    ]
    page = report._page(result, config, None, events, pngs, tmp_path)
    assert SCRIPT not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the page's own plot counter
    assert page.count("data:image/png;base64,") == 4 and "plots: 4" in page
    assert "<b>PASSED</b>" in page and "<td class='fail'>FAIL</td>" in page
    assert "+3.2 [-1.0, +7.5]" in page and "10 / 90" in page and "continue 10%" in page
    assert "initial champion\n500.0 (nominal) / 120.5 (changed world)" in page and "Wall time 123 s" in page
    assert '<a href="../monitoring/window-004.html">window-004</a>' in page
    assert "http://127.0.0.1:5000/#/experiments/3/runs/run9" in page and "--port 5000" in page
    assert "<tr class='canary_step'>" in page and "1.2 s" in page
