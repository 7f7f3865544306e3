"""monitor_policy (the component) and the monitor_and_improve pipeline under kfp.local."""

from __future__ import annotations

import json

import pytest
from kfp import dsl

from components.monitor_policy.component import monitor_policy
from rlops_plugin.audit.events import list_events
from rlops_plugin.errors import RLOpsError
from rlops_plugin.flavor import get_alias_version, registry

pytestmark = pytest.mark.integration
NEVER = json.dumps(["drift:*:50"])  # 50 drifting windows in a row: cannot happen in 3,000 decisions
AT_ONCE = json.dumps(["schedule:1ms"])  # fires on the first window that spans a millisecond of traffic


def test_monitor_component_reports_windows_and_triggers(world, tracking, tmp_path):
    outputs = {}
    for label, rules in (("never", NEVER), ("at_once", AT_ONCE)):
        report = dsl.HTML(name="report", uri=str(tmp_path / label / "report.html"))
        metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / label / "metrics"))
        (tmp_path / label).mkdir()
        outputs[label] = (monitor_policy.python_func(model=f"{world['name']}@champion", store=world["store"],
                                                     report=report, metrics=metrics, reference="production:1000",
                                                     window=500, triggers_json=rules,
                                                     tracking_uri=world["tracking"]), report, metrics)
    (quiet, report, metrics), (fired, _, fired_metrics) = outputs["never"], outputs["at_once"]
    assert quiet.triggered is False and json.loads(quiet.events_json) == []
    assert metrics.metadata["windows"] == 4.0 and metrics.metadata["triggers"] == 0.0
    assert (tmp_path / "never" / "report.html").read_text().startswith("<html")
    events = json.loads(fired.events_json)
    assert fired.triggered is True and events[0]["rule"] == "schedule:0.001s"
    assert fired_metrics.metadata["triggers"] >= 1
    assert events[0]["model"] == world["name"]
    with pytest.raises(RLOpsError):
        monitor_policy.python_func(model=f"{world['name']}@champion", store=world["store"], report=report,
                                   metrics=metrics, reference="production:1000", window=500,
                                   triggers_json=json.dumps(["drift:nonsense"]), tracking_uri=world["tracking"])


@pytest.mark.slow
def test_monitor_and_improve_runs_locally(world, tracking, tmp_path):
    """No trigger: the monitor runs and the cycle is skipped. A trigger: the nested cycle registers a challenger."""
    from rlops_plugin.pipelines.run import run_local

    name = world["name"]
    base = {"model_name": name, "store": world["store"], "reference": "production:1000", "window": 500,
            "trainer_config_json": json.dumps({"steps": 300}), "eval_episodes": 5,
            "gate_policy_json": json.dumps({"episodes": 5, "regression_margin": 0.9})}
    before = get_alias_version(name, "champion")
    run_local({**base, "triggers_json": NEVER}, tmp_path / "quiet", pipeline="monitor_and_improve")
    assert [e.kind for e in list_events(name) if e.kind != "trigger"] == []
    assert len(registry.client().search_model_versions(f"name = '{name}'")) == 1

    result = run_local({**base, "triggers_json": AT_ONCE}, tmp_path / "fired", pipeline="monitor_and_improve")
    assert result["wall_s"] > 0
    kinds = [e.kind for e in list_events(name)]
    assert "trigger" in kinds and "gate" in kinds and kinds[-1] == "pipeline_cycle"
    versions = registry.client().search_model_versions(f"name = '{name}'")
    if "policy_update" in kinds:  # the gate passed: a challenger with lineage (no deployment: no canary)
        challenger = max(versions, key=lambda mv: int(mv.version))
        assert challenger.tags["rlops.parent_version"] == before and challenger.tags["rlops.dataset_digest"]
        assert get_alias_version(name, "challenger") == challenger.version
    assert get_alias_version(name, "champion") == before
