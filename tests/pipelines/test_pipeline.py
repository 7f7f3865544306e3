"""The continuous-improvement pipeline end to end with kfp.local, and submission to a (fake) Kubeflow."""

from __future__ import annotations

import json

import pytest

from rlops_plugin.audit.events import list_events
from rlops_plugin.flavor import get_alias_version, registry
from rlops_plugin.pipelines.run import submit
from tests.fixtures.recorder import FakeKfp, Recorder

PROMOTION = {"steps": [0.5], "shadow_decisions": 100, "min_decisions_per_step": 10, "min_samples": 10,
             "metric": "episode", "poll_interval_s": 1, "max_duration_s": 300}


@pytest.mark.integration
@pytest.mark.slow
def test_one_cycle_runs_locally(world, tracking, tmp_path):
    from rlops_plugin.pipelines.run import run_local

    name = world["name"]
    before = get_alias_version(name, "champion")
    result = run_local({"model_name": name, "store": world["store"], "deployment": world["deployment"],
                        "target": world["target"], "trainer": "cql", "trainer_config_json": json.dumps({"steps": 600}),
                        "eval_episodes": 5, "gate_policy_json": json.dumps({"episodes": 5, "regression_margin": 0.5}),
                        "promotion_json": json.dumps(PROMOTION), "simulate_traffic": True}, tmp_path / "kfp")
    assert result["wall_s"] > 0
    versions = registry.client().search_model_versions(f"name = '{name}'")
    challenger = max(versions, key=lambda mv: int(mv.version))
    assert int(challenger.version) > int(before)
    assert challenger.tags["rlops.parent_version"] == before and challenger.tags["rlops.dataset_digest"]
    assert challenger.tags["rlops.trainer"] == "cql" and challenger.tags["rlops.gate"] == "passed"
    events = list_events(name)
    kinds = [e.kind for e in events]
    assert "policy_update" in kinds and kinds[-1] == "pipeline_cycle" and events[-1].decision == "succeeded"
    outcome = [e.decision for e in events if e.kind in ("promotion", "rollback")]
    assert outcome and outcome[-1] in ("promoted", "rolled_back")
    assert (tmp_path / "kfp").is_dir()


def test_submit_and_schedule_on_kubeflow():
    recorder = Recorder(FakeKfp()).start()
    try:
        run = submit(recorder.url, {"model_name": "cartpole", "store": "postgresql://db/rlops"}, experiment="rlops",
                     service_account="rlops-pipeline")
        scheduled = submit(recorder.url, {"model_name": "cartpole", "store": "postgresql://db/rlops"},
                           experiment="rlops", cron="0 0 3 * * *")
    finally:
        recorder.stop()
    assert run == {"run_id": "run-1"} and scheduled["recurring_run_id"] == "recurring-1"
    posts = {r.path: r.body for r in recorder.requests if r.method == "POST"}
    created = posts["/apis/v2beta1/runs"]
    assert created["pipeline_spec"]["pipelineInfo"]["name"] == "rlops-continuous-improvement"
    assert created["runtime_config"]["parameters"] == {"model_name": "cartpole", "store": "postgresql://db/rlops"}
    assert created["service_account"] == "rlops-pipeline"
    recurring = posts["/apis/v2beta1/recurringruns"]
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert recurring["max_concurrency"] == "1" or recurring["max_concurrency"] == 1
    assert recurring["no_catchup"] is True


def test_submit_monitor_and_improve_and_refuse_unknown_pipelines():
    from rlops_plugin.pipelines.run import PipelineError, pipeline_function

    recorder = Recorder(FakeKfp()).start()
    try:
        submit(recorder.url, {"model_name": "cartpole", "store": "postgresql://db/rlops"},
               pipeline="monitor_and_improve")
    finally:
        recorder.stop()
    created = next(r.body for r in recorder.requests if r.method == "POST" and r.path == "/apis/v2beta1/runs")
    assert created["pipeline_spec"]["pipelineInfo"]["name"] == "rlops-monitor-and-improve"
    with pytest.raises(PipelineError, match="unknown pipeline 'nightly'"):
        pipeline_function("nightly")
