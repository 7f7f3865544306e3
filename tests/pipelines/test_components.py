"""Every component's function, called directly through ``component.python_func`` (no Kubeflow)."""

from __future__ import annotations

import json

import mlflow
import pytest
from kfp import dsl

from components.build_dataset.component import build_dataset
from components.calibrate_env.component import calibrate_env
from components.deploy_policy.component import deploy_policy
from components.evaluate_policy.component import evaluate_policy
from components.gate_policy.component import gate_policy
from components.record_cycle.component import record_cycle
from components.register_policy.component import register_policy
from components.train_policy.component import train_policy
from rlops_plugin.audit.events import list_events
from rlops_plugin.flavor import get_alias_version, registry

pytestmark = pytest.mark.integration
FAST_PROMOTION = json.dumps({"steps": [0.5], "shadow_decisions": 100, "min_decisions_per_step": 10, "min_samples": 10,
                             "metric": "episode", "poll_interval_s": 1, "max_duration_s": 300})


def test_components_one_after_another(world, tracking, tmp_path):
    name, champion = world["name"], f"models:/{world['name']}@champion"
    dataset = dsl.Dataset(name="dataset", uri=str(tmp_path / "dataset"))
    rows, digest = build_dataset.python_func(store=world["store"], bundle_uri=champion, dataset=dataset,
                                             tracking_uri=world["tracking"])
    assert rows > 1000 and digest.startswith("sha256:") and dataset.metadata["digest"] == digest
    assert (tmp_path / "dataset" / "data.parquet").exists()

    fit = dsl.Artifact(name="calibration", uri=str(tmp_path / "calibration.json"))
    skipped, _ = calibrate_env.python_func(dataset=dataset, bundle_uri=champion, calibration=fit,
                                          tracking_uri=world["tracking"])
    assert skipped == ""  # recent=0: no calibration
    calibration_json, summary = calibrate_env.python_func(
        dataset=dataset, bundle_uri=champion, calibration=fit, recent=1000, tracking_uri=world["tracking"],
        params_json=json.dumps({"masscart": {"low": 0.25, "high": 10.0}}))
    calibration = json.loads(calibration_json)  # the traffic ran in the nominal world: masscart 1.0
    assert calibration["params"]["masscart"] == pytest.approx(1.0, rel=1e-3) and calibration["transitions"] > 900
    assert json.loads((tmp_path / "calibration.json").read_text()) == calibration
    assert summary.startswith("masscart=1") and fit.metadata["summary"] == summary

    model = dsl.Model(name="model", uri=str(tmp_path / "model"))
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    model_uri, run_id, ret = train_policy.python_func(
        trainer="cql", init_uri=champion, dataset=dataset, model=model, metrics=metrics,
        config_json=json.dumps({"steps": 600}), eval_episodes=5, tracking_uri=world["tracking"],
        finetune_steps=256, finetune_config_json=json.dumps({"n_envs": 2, "rollout_steps": 64,
                                                              "extra_randomization": {"length": {"low": 0.5,
                                                                                                 "high": 0.8}}}),
        calibration_json=calibration_json)
    assert model_uri.startswith("models:/m-") and run_id and ret > 0
    finetune = mlflow.get_run(run_id).data
    assert finetune.tags["rlops.trainer"] == "sim_finetune" and finetune.params["trainer.total_steps"] == "256"
    randomized = json.loads(finetune.params["trainer.extra_randomization"])
    assert randomized["length"] == {"low": 0.5, "high": 0.8}  # configured, kept
    assert randomized["masscart"]["low"] < calibration["params"]["masscart"] < randomized["masscart"]["high"]
    assert finetune.tags["rlops.calibration"].startswith("masscart=1")
    assert model.metadata["dataset_digest"] == digest and (tmp_path / "model" / "MLmodel").exists()
    assert "eval_return_mean" in metrics.metadata

    report = dsl.HTML(name="report", uri=str(tmp_path / "report.html"))
    value = evaluate_policy.python_func(model_uri=model_uri, report=report,
                                        metrics=dsl.Metrics(name="m", uri=str(tmp_path / "m2")), episodes=5,
                                        scenarios_json='["cartpole-safety"]', tracking_uri=world["tracking"])
    assert value > 0 and "cartpole-safety/long_pole" in (tmp_path / "report.html").read_text()

    result = dsl.Artifact(name="result", uri=str(tmp_path / "gate.json"))
    passed = gate_policy.python_func(candidate_uri=model_uri, champion_uri=champion, result=result,
                                     policy_json=json.dumps({"episodes": 5, "regression_margin": 0.5}),
                                     tracking_uri=world["tracking"])
    assert passed is True and json.loads((tmp_path / "gate.json").read_text())["passed"] is True

    version = register_policy.python_func(model_uri=model_uri, name=name, gate_result=result,
                                          tracking_uri=world["tracking"])
    assert get_alias_version(name, "challenger") == version
    mv = registry.client().get_model_version(name, version)
    assert mv.tags["rlops.parent_version"] == "1" and mv.tags["rlops.dataset_digest"] == digest
    assert mv.tags["rlops.trainer"] == "cql+sim_finetune" and mv.tags["rlops.gate"] == "passed"
    assert mv.tags["rlops.calibration"].startswith("masscart=1")
    update = next(e for e in list_events(name) if e.kind == "policy_update" and e.model_version == version)
    assert update.details["calibration"]["params"] == calibration["params"]
    assert update.metrics["calibration/masscart"] == pytest.approx(calibration["params"]["masscart"])

    state, reason = deploy_policy.python_func(name=name, deployment=world["deployment"], store=world["store"],
                                              target=world["target"], promotion_json=FAST_PROMOTION,
                                              simulate_traffic=True, tracking_uri=world["tracking"],
                                              traffic_env_json=json.dumps({"params": {"length": 0.6}}))
    assert state in ("promoted", "rolled_back"), reason
    assert get_alias_version(name, "challenger") is None

    status = dsl.PipelineTaskFinalStatus(state="SUCCEEDED", pipeline_job_resource_name="local-run-1",
                                         pipeline_task_name="exit-handler", error_code=None, error_message=None)
    run = record_cycle.python_func(name=name, status=status, tracking_uri=world["tracking"])
    kinds = [e.kind for e in list_events(name)]
    assert run and kinds[:2] == ["gate", "policy_update"] and kinds[-1] == "pipeline_cycle"
    assert {"canary_step"} <= set(kinds) and ("promotion" in kinds or "rollback" in kinds)
    gate_event = list_events(name, kinds=["gate"])[0]
    assert gate_event.decision == "passed" and gate_event.details["candidate_uri"] == model_uri
    assert gate_event.metrics["gate/passed"] == 1.0 and gate_event.details["checks"]
    update = list_events(name, kinds=["policy_update"])[0]
    assert update.details["dataset_digest"] == digest and update.details["hashes"]["bundle"]
    assert {"eval/return_mean", "gate/regression/champion_return", "gate/regression/candidate_return"} <= \
        set(update.metrics)


def test_traffic_overrides_are_checked_before_anything_runs():
    from rlops_plugin.errors import ConfigError
    from rlops_plugin.pipelines import steps

    with pytest.raises(ConfigError, match="unknown EnvSpec fields.*lenght"):
        steps.deploy_policy("m", "d", "store.db", traffic_env_json='{"lenght": 1}', simulate_traffic=True)


def test_component_literal_defaults_match_the_named_defaults():
    """KFP ships a component's source alone, so its defaults are literals; they must not drift."""
    import inspect

    from components.monitor_policy.component import monitor_policy
    from rlops_plugin.defaults import MONITOR_REFERENCE, MONITOR_WINDOW

    params = inspect.signature(monitor_policy.python_func).parameters
    assert (params["reference"].default, params["window"].default) == (MONITOR_REFERENCE, MONITOR_WINDOW)
