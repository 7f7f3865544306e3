"""``rlops monitor`` through click: console output, triggers, reports, errors; MLflow end to end."""

import json

import mlflow
import pytest
from click.testing import CliRunner

from rlops_plugin import EnvSpec, flavor
from rlops_plugin.audit.events import list_events
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor.model import LoadedModel
from rlops_plugin.monitoring.cli import monitor
from rlops_plugin.serving.engine import DecisionEngine
from rlops_plugin.simulation.traffic import DecisionClient, simulate
from tests.monitoring.conftest import EngineClient

SHIFT = {"reward_transform": lambda r: 0.9 * r}


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    """A saved model directory and a store with 512 normal then 512 reward-shifted decisions of it."""
    from rlops_plugin import PolicyBundle

    root = tmp_path_factory.mktemp("monitor-cli")
    bundle = PolicyBundle.create(EnvSpec(id="CartPole-v1"), "env", config={"hidden_sizes": [32, 32]}, seed=0)
    flavor.save_model(bundle, root / "model")
    with open_store(root / "store.db") as store:
        client = EngineClient(DecisionEngine("policy", LoadedModel(bundle, str(root / "model")), seed=0), store)
        simulate(client, EnvSpec(id="CartPole-v1"), 500, seed=1, episode_prefix="a")
        simulate(client, EnvSpec(id="CartPole-v1"), 500, seed=2, episode_prefix="b", **SHIFT)
    return root / "model", root / "store.db"


def test_console_output_per_window_with_trigger_and_reports(local_model, tmp_path, trigger_hook):
    model, store = local_model
    events = tmp_path / "events.jsonl"
    result = CliRunner().invoke(monitor, [
        "--model", str(model), "--store", str(store), "--reference", "rollouts:5000", "--window", "250", "--once",
        "--no-mlflow", "--trigger", "drift:rewards:2", "--on-trigger", f"jsonl:{events}",
        "--report-dir", str(tmp_path / "reports")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output
    for header in ("signal", "statistic", "threshold", "drifted?"):
        assert header in out
    assert out.count("window ") >= 4 and "jensenshannon" in out and "TRIGGER drift:rewards:2 on window 3" in out
    assert "4 windows" in out and "1 triggers" in out and "24 decisions wait for a full window of 250" in out
    (event,) = trigger_hook
    assert event.window == 3 and json.loads(events.read_text())["id"] == event.id
    assert (tmp_path / "reports" / "window-000002.html").is_file()


def test_json_lines_and_exit_code(local_model):
    model, store = local_model
    result = CliRunner().invoke(monitor, [
        "--model", str(model), "--store", str(store), "--reference", "production:500", "--window", "250",
        "--no-mlflow", "--no-calibration", "--trigger", "reward-below:0.95", "--json", "--exit-code",
        "--monitors", "rewards,returns", "--reports", "never"])
    assert result.exit_code == 1, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [w["window"] for w in lines] == [0, 1]
    assert lines[0]["signals"]["rewards"]["status"] == "drift" and lines[0]["reward"]["mean"] < 0.91
    assert lines[0]["triggers"][0]["rule"] == "reward-below:0.95:0.95:reward"


@pytest.mark.parametrize(("args", "match"), [
    (["--model", "nope"], "--model 'nope': write NAME@ALIAS"),
    (["--model", "m@champion", "--once", "--every", "5s"], "--once and --every exclude each other"),
    (["--model", "m@champion", "--every", "soon"], "duration 'soon'"),
    (["--model", "m@champion", "--on-trigger", "teleport"], "unknown trigger action 'teleport'"),
    (["--model", "m@champion", "--trigger", "drift:colour:2"], "signal 'colour' is not monitored"),
    (["--model", "m@champion", "--stattest", "observations"], "--stattest 'observations': write SIGNAL=VALUE"),
    (["--model", "m@champion", "--threshold", "rewards=high"], "--threshold: 'high' is not a number"),
])
def test_bad_arguments_are_one_line_errors(args, match, tmp_path):
    result = CliRunner().invoke(monitor, [*args, "--store", str(tmp_path / "s.db"), "--no-mlflow"])
    assert result.exit_code == 2
    assert result.output.startswith("error: MonitorConfigError: ") and match in result.output
    assert "Traceback" not in result.output


def test_unknown_reference_and_missing_decisions(local_model, tmp_path):
    model, store = local_model
    bad = CliRunner().invoke(monitor, ["--model", str(model), "--store", str(store), "--reference", "bogus",
                                       "--no-mlflow"])
    assert bad.exit_code == 2 and "--reference 'bogus': rollouts[:N]" in bad.output
    empty = CliRunner().invoke(monitor, ["--model", str(model), "--store", str(tmp_path / "empty.db"),
                                         "--reference", "production", "--no-mlflow"])
    assert empty.exit_code == 2 and "no decisions of" in empty.output and "the store is empty" in empty.output


@pytest.mark.integration
def test_registry_model_served_for_real_monitored_into_mlflow(tracking, model_name, cartpole_bundle, tmp_path,
                                                               trigger_hook):
    from rlops_plugin.serving.process import PolicyServerProcess

    with mlflow.start_run():
        flavor.log_model(cartpole_bundle, name="policy", registered_model_name=model_name)
    flavor.promote(model_name, 1)
    store = tmp_path / "store.db"
    with PolicyServerProcess(f"models:/{model_name}@champion", tmp_path / "server.log", store=str(store)) as server:
        client = DecisionClient(server.url)
        simulate(client, EnvSpec(id="CartPole-v1"), 2500, seed=0, episode_prefix="ref")
        simulate(client, EnvSpec(id="CartPole-v1"), 500, seed=1, episode_prefix="ok")
        simulate(client, EnvSpec(id="CartPole-v1"), 500, seed=2, episode_prefix="shifted", **SHIFT)
        client.close()
    result = CliRunner().invoke(monitor, [
        "--model", f"{model_name}@champion", "--store", str(store), "--reference", "production:2500",
        "--window", "250", "--trigger", "drift:rewards:2", "--on-trigger", "log", "--experiment", "monitor-test",
        "--reports", "drift"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    version = f"{model_name}/1@{cartpole_bundle.bundle_sha[:12]}"
    assert f"Monitoring {version}" in result.output and "TRIGGER drift:rewards:2 on window 3" in result.output
    (event,) = trigger_hook
    assert event.model == model_name and event.policy_version == version and event.actions == {"log": "logged"}

    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("monitor-test").experiment_id])
    tags = run.data.tags
    assert tags["rlops.model_name"] == model_name and tags["rlops.model_version"] == "1"
    assert tags["rlops.model_alias"] == "champion" and tags["rlops.policy_version"] == version
    assert run.info.status == "FINISHED" and run.data.params["window"] == "250"
    history = client.get_metric_history(run.info.run_id, "monitor/drift_share")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    rewards = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "monitor/rewards/drift")}
    assert rewards[2] == 1.0 and rewards[3] == 1.0 and rewards[0] == 0.0
    reward_mean = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "monitor/reward_mean")}
    assert reward_mean[3] == pytest.approx(0.9)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"monitor_config.json", "calibration.json", "windows", "triggers"} <= artifacts
    window3 = {a.path for a in client.list_artifacts(run.info.run_id, "windows/000003")}
    assert {"windows/000003/summary.json", "windows/000003/window-000003.html"} <= window3
    summary = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/windows/000003/summary.json")
    assert summary["signals"]["rewards"]["status"] == "drift" and summary["triggers"][0]["rule"] == "drift:rewards:2"
    triggers = [a.path for a in client.list_artifacts(run.info.run_id, "triggers")]
    assert triggers == ["triggers/000003-drift_rewards_2.json"]
    assert client.get_model_version(model_name, "1").tags["rlops.monitoring_run_id"] == run.info.run_id
    (audit,) = list_events(model_name, kinds=["trigger"])
    assert audit.decision == "drift:rewards:2" and audit.model_version == "1" and audit.actor == "rlops:monitor"
    assert audit.details["monitoring_run_id"] == run.info.run_id and audit.details["trigger"]["window"] == 3


def test_all_versions_watches_the_endpoint_and_catches_a_swap(tmp_path):
    from rlops_plugin import PolicyBundle

    champion = PolicyBundle.create(EnvSpec(id="CartPole-v1"), "env", config={"hidden_sizes": [32, 32]}, seed=0)
    other = PolicyBundle.create(EnvSpec(id="CartPole-v1"), "env", config={"hidden_sizes": [32, 32]}, seed=1)
    flavor.save_model(champion, tmp_path / "model")
    with open_store(tmp_path / "store.db") as store:
        for bundle, decisions in ((champion, 1000), (other, 500)):  # the endpoint swaps to another policy
            engine = DecisionEngine("policy", LoadedModel(bundle, "somewhere"), seed=0)
            simulate(EngineClient(engine, store), EnvSpec(id="CartPole-v1"), decisions, seed=decisions)
    args = ["--model", str(tmp_path / "model"), "--store", str(tmp_path / "store.db"), "--reference",
            "production:500", "--window", "250", "--no-mlflow", "--json", "--monitors", "propensities",
            "--reports", "never"]
    own = [json.loads(line) for line in CliRunner().invoke(monitor, args).output.splitlines()]
    endpoint = [json.loads(line) for line in CliRunner().invoke(monitor, [*args, "--all-versions"]).output
                .splitlines()]
    assert len(own) == 2 and len(endpoint) == 4 and endpoint[0]["policy_version"] is None
    assert [w["signals"]["propensities"]["status"] for w in endpoint[2:]] == ["drift", "drift"]


def test_run_monitor_is_the_command_without_a_console(local_model):
    from rlops_plugin.monitoring.config import MonitorConfig
    from rlops_plugin.monitoring.runner import MonitorOptions, run_monitor

    model, store = local_model
    seen = []
    outcome = run_monitor(str(model), str(store), MonitorOptions(
        reference="production:500", config=MonitorConfig(window=250, monitors=("rewards", "actions")),
        triggers=["drift:rewards:1"], use_mlflow=False, reports="never", on_window=seen.append))
    assert outcome.triggered and outcome.run_id is None and outcome.pending == 24
    assert [s.index for s in outcome.summaries] == [0, 1] and seen == outcome.summaries
    assert outcome.events[0].policy_version == outcome.policy.policy_version == outcome.summaries[0].policy_version
