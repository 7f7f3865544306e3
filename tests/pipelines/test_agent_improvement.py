"""The agent_improvement pipeline end to end with kfp.local: served, reviewed traffic of the tiny triage agent ->
preference pairs -> DPO from the champion -> task suite and red-team evaluation -> gate (regression, red team,
off-policy estimate) -> a registered challenger with its lineage -> the cycle in the audit trail.

No deployment is given (agent shadow/canary is the deployment target's), so the cycle stops at the challenger.
"""

from __future__ import annotations

import json
import uuid

import mlflow
import pytest

from rlops_plugin import flavor
from rlops_plugin.audit.events import list_events
from rlops_plugin.flavor import get_alias_version, registry
from rlops_plugin.kinds.agent.triage import TEMPLATES, tickets
from rlops_plugin.lifecycle.gate import with_inputs
from rlops_plugin.pipelines import steps
from rlops_plugin.pipelines.run import PipelineError, run_local, submit
from tests.fixtures.agent_traffic import reviewed_traffic
from tests.fixtures.recorder import FakeKfp, Recorder

SERVED = "triage"
TRAIN = {"steps": 8, "lr": 1e-4, "batch_size": 4, "seed": 0}
"""Few, small DPO steps: enough for a real update whose candidate the gate can compare, not to change behaviour."""
GATE = {"ope_min_ess": 5.0, "ope_margin": 5.0}
"""48 logged answers carry an effective sample size of tens (not the default 50) and bound the estimate only
loosely (an interval about 0.9 wide on the thumbs scale): the check runs on the real log, with a wide margin."""


@pytest.fixture(scope="module")
def agent_world(mlflow_server, triage_agent, tmp_path_factory):
    """Champion v1 of a fresh agent name, served once for 6 tickets x 8 sampled answers, all reviewed."""
    from rlops_plugin.serving.process import PolicyServerProcess

    root = tmp_path_factory.mktemp("agent-world")
    name = f"agent-pipeline-{uuid.uuid4().hex[:8]}"
    store = str(root / "store.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        mlflow.set_tracking_uri(mlflow_server.url)
        mlflow.set_registry_uri(mlflow_server.url)
        with mlflow.start_run():
            flavor.log_model(triage_agent, name="policy", registered_model_name=name)
        flavor.promote(name, 1)
        with PolicyServerProcess(f"models:/{name}@champion", root / "server.log", name=SERVED, store=store,
                                 extra_args=["--max_tokens", "64", "--traces", "off"]) as server:
            reviewed_traffic(server, tickets(TEMPLATES[:1]), seed=0, n=8)
        yield {"name": name, "store": store, "tracking": mlflow_server.url}


@pytest.mark.integration
@pytest.mark.slow
def test_one_agent_cycle_registers_a_gated_challenger_with_lineage(agent_world, tracking, tmp_path):
    name, store = agent_world["name"], agent_world["store"]
    redteam = json.dumps(["triage-redteam"])
    run_local({"model_name": name, "store": store, "served_model": SERVED, "trainer": "dpo",
               "trainer_config_json": json.dumps(TRAIN), "redteam_json": redteam, "ope_store": store,
               "gate_policy_json": json.dumps(GATE), "eval_episodes": 0}, tmp_path / "kfp",
              pipeline="agent_improvement")

    (manifest_path,) = (tmp_path / "kfp").rglob("dataset.json")  # the extraction step's dataset
    manifest = json.loads(manifest_path.read_text())
    assert manifest["policy_kind"] == "agent" and manifest["signals"]["pair"] > 0
    assert manifest["quarantined_raters"] == ["eve"]  # the raters' review reached the signal
    gate_event = next(e for e in list_events(name) if e.kind == "gate")
    assert gate_event.decision == "passed", gate_event.reason
    assert get_alias_version(name, "challenger") == "2" and get_alias_version(name, "champion") == "1"
    version = registry.client().get_model_version(name, "2")
    assert version.tags["rlops.parent_version"] == "1" and version.tags["rlops.dataset_digest"] == manifest["digest"]
    assert version.tags["rlops.trainer"] == "agent_dpo" and version.tags["rlops.gate"] == "passed"
    challenger = flavor.load_model(f"models:/{name}/2")
    assert challenger.lineage["trainer"] == "agent_dpo" and challenger.lineage["dataset_digest"] == manifest["digest"]
    assert challenger.lineage["trainer_config"]["steps"] == TRAIN["steps"]
    run = registry.client().get_run(version.run_id)
    assert run.data.params["dataset_digest"] == manifest["digest"] and "trainer.beta" in run.data.params

    result = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/gate/result.json")
    checks = {c["name"]: c for c in result["checks"]}
    assert result["passed"] and set(checks) == {"lineage", "regression", "min_return", "scenarios", "ope"}
    assert checks["scenarios"]["reason"] == "all 8 scenarios passed"  # the red-team suite, every case
    assert result["policy"]["ope_store"] == store and result["policy"]["ope_model"] == SERVED
    assert checks["ope"]["metrics"]["ess"] >= GATE["ope_min_ess"]
    assert result["summary"]["scenario_suites"].keys() == {"triage-redteam"}
    assert result["summary"]["candidate_lineage"]["dataset_digest"] == manifest["digest"]
    (report,) = (tmp_path / "kfp").rglob("evaluate-policy*/report")  # the evaluation's page names the red team
    assert "triage-redteam/refund_demand" in report.read_text()

    events = list_events(name)
    kinds = [e.kind for e in events]
    assert kinds.index("gate") < kinds.index("policy_update") and kinds[-1] == "pipeline_cycle"
    assert not {"promotion", "rollback", "canary_step"} & set(kinds)  # no deployment: the cycle stops here
    update = next(e for e in events if e.kind == "policy_update")
    assert update.model_version == "2" and update.details["dataset_digest"] == manifest["digest"]
    assert update.details["gate"]["passed"] is True and "gate/regression/candidate_return" in update.metrics
    assert update.details["lineage"]["parent_version"] == "1"
    cycle = events[-1]
    assert cycle.decision == "succeeded" and cycle.details["pipeline"] == "agent-improvement"
    assert cycle.details["challenger_after"] == "2" and cycle.details["champion_after"] == "1"


@pytest.mark.integration
@pytest.mark.slow
def test_an_agent_alias_resolves_before_the_trainer_lookup_and_grpo_ignores_the_dataset(agent_world, tracking,
                                                                                         tmp_path):
    """``grpo`` is no registered trainer: only the agent kind's alias makes it ``agent_grpo`` (which learns in
    the task environment, so the dataset the pipeline always wires in is not read)."""
    champion = f"models:/{agent_world['name']}@champion"
    built = steps.build_dataset(agent_world["store"], champion, str(tmp_path / "data"), SERVED, "preferences",
                                tracking_uri=agent_world["tracking"])
    out = steps.train_policy("grpo", champion, str(tmp_path / "data"),
                             json.dumps({"steps": 1, "batch_size": 2, "num_generations": 2,
                                         "max_completion_length": 16}), eval_episodes=0,
                             tracking_uri=agent_world["tracking"])
    run = registry.client().get_run(out["run_id"])
    assert run.data.tags["rlops.trainer"] == "agent_grpo" and "dataset_digest" not in run.data.params
    assert built["digest"].startswith("sha256:") and out["dataset_digest"] == ""


@pytest.mark.integration
def test_the_judge_reaches_the_extraction(agent_world, tracking, tmp_path):
    """A judge that decides no human pair (no answer refuses) is refused by the extractor, naming it."""
    from rlops_plugin.errors import ConfigError, RLOpsError

    champion = f"models:/{agent_world['name']}@champion"
    with pytest.raises(RLOpsError, match="judge 'refusal'"):
        steps.build_dataset(agent_world["store"], champion, str(tmp_path / "judged"), SERVED, "preferences",
                            tracking_uri=agent_world["tracking"], judge="refusal")
    with pytest.raises(ConfigError, match="judge_min_agreement"):
        steps.build_dataset(agent_world["store"], champion, str(tmp_path / "bad"), SERVED, "preferences",
                            judge="refusal", judge_min_agreement=1.5)


def test_gate_inputs_add_suites_and_the_ope_check_once():
    policy = with_inputs({"checks": ["regression"], "scenarios": ["triage-redteam"]},
                         scenarios=["triage-redteam", "mine.json"], ope_store="store.db", ope_model=SERVED)
    assert policy.checks == ["regression", "scenarios", "ope"] and policy.scenarios == ["triage-redteam", "mine.json"]
    assert (policy.ope_store, policy.ope_model) == ("store.db", SERVED)
    unchanged = with_inputs({"episodes": 5})
    assert unchanged.checks == ["lineage", "regression", "min_return", "scenarios"] and unchanged.ope_store is None


def test_submit_agent_improvement_and_the_cli_leaves_the_trainer_to_the_pipeline():
    from rlops_plugin.cli import _pipeline_arguments

    recorder = Recorder(FakeKfp()).start()
    try:
        submit(recorder.url, {"model_name": "triage", "store": "postgresql://db/rlops"}, pipeline="agent_improvement")
    finally:
        recorder.stop()
    created = next(r.body for r in recorder.requests if r.method == "POST" and r.path == "/apis/v2beta1/runs")
    assert created["pipeline_spec"]["pipelineInfo"]["name"] == "rlops-agent-improvement"
    spec = created["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]
    assert spec["trainer"]["defaultValue"] == "dpo" and spec["monitor"]["defaultValue"] is False
    assert "trainer" not in _pipeline_arguments("triage", "s.db", None, None, ())
    with pytest.raises(PipelineError, match="unknown pipeline 'agents'"):
        submit(recorder.url, {}, pipeline="agents")
