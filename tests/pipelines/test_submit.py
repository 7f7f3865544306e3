"""``submit-pipeline``: one Kubeflow Pipelines run per trigger, through the real ``kfp.Client``.

The KFP API is a recording server on 127.0.0.1 (``tests/fixtures/recorder.py``) answering the v2beta1
calls kfp.Client makes (healthz, experiments list/create, runs create); the tests assert what was
sent, then run ``rlops monitor`` end to end and check the trigger's audit event.
"""

import json
import socket
import uuid

import mlflow
import pytest
import yaml
from click.testing import CliRunner

from rlops_plugin import EnvSpec, PolicyBundle, flavor
from rlops_plugin.audit.events import list_events
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor.model import LoadedModel
from rlops_plugin.monitoring.cli import monitor
from rlops_plugin.monitoring.triggers import TriggerEvent, is_dispatch, trigger_actions
from rlops_plugin.pipelines.submit import (
    KfpTarget,
    SubmitConfigError,
    SubmitError,
    default_run_name,
    submit_run,
    trigger_action,
)
from rlops_plugin.serving.engine import DecisionEngine
from rlops_plugin.simulation.traffic import simulate
from tests.conftest import REPO_ROOT
from tests.fixtures.recorder import FakeKfp, Recorder
from tests.monitoring.conftest import EngineClient

RUNS, EXPERIMENTS, HEALTHZ = "/apis/v2beta1/runs", "/apis/v2beta1/experiments", "/apis/v2beta1/healthz"
PARAMS = {"store": "postgresql://db.rlops/rlops", "tracking_uri": "http://mlflow.rlops:5000", "trainer": "bc"}


@pytest.fixture
def kfp_host():
    """A recording KFP API (v2beta1) on 127.0.0.1; yields the recorder."""
    recorder = Recorder(FakeKfp()).start()
    yield recorder
    recorder.stop()


@pytest.fixture
def refusing_host():
    """A KFP API that answers healthz and experiments but refuses to create runs (403, KFP's error body)."""
    fake = FakeKfp()

    def handler(method, path, query, body):
        if path == RUNS and method == "POST":
            return 403, {"error": "user is not allowed to create runs in namespace team-rl", "code": 7,
                         "message": "user is not allowed to create runs in namespace team-rl"}
        return fake(method, path, query, body)

    recorder = Recorder(handler).start()
    yield recorder
    recorder.stop()


@pytest.fixture
def kfp_env(monkeypatch):
    """No KFP settings leaking in from the environment."""
    for name in ("KFP_HOST", "KFP_NAMESPACE", "KFP_EXPERIMENT", "KFP_TOKEN", "KF_PIPELINES_ENDPOINT",
                 "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME",
                 "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def event(model="cartpole"):
    """A trigger event as the monitor makes it."""
    return TriggerEvent("drift:rewards:2", model, f"{model}/1@0123456789ab", 3, {"signal": "rewards"})


def write_params(tmp_path, **params):
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params))
    return str(path)


def paths(recorder):
    return [(r.method, r.path) for r in recorder.requests]


def free_port() -> int:
    """A port nothing listens on (bound then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_submit_pipeline_is_a_registered_dispatch_action():
    assert "submit-pipeline" in trigger_actions() and "kfp.Client" in trigger_actions()["submit-pipeline"]
    assert is_dispatch("submit-pipeline:params.json") and not is_dispatch("run-pipeline:params.json")


def test_a_trigger_posts_one_run_of_the_compiled_pipeline_with_the_model_and_the_token(kfp_host, kfp_env, tmp_path):
    kfp_env.setenv("KFP_TOKEN", "token-from-env")
    params = write_params(tmp_path, host=kfp_host.url, namespace="team-rl", experiment="rlops-triggers",
                          service_account="rlops-pipeline", **PARAMS)
    fired = event()
    result = trigger_action(fired, params)

    run_name = f"rlops-continuous-improvement-cartpole-{fired.id[:8]}"
    assert result == {"run_id": "run-1", "run_url": f"{kfp_host.url}/#/runs/details/run-1", "run_name": run_name,
                      "host": kfp_host.url, "experiment": "rlops-triggers", "experiment_id": "exp-1",
                      "pipeline": "continuous_improvement", "namespace": "team-rl"}
    # a namespace is given, so kfp.Client asks no healthz; the experiment is looked up, made, then the run
    assert paths(kfp_host) == [("GET", EXPERIMENTS), ("POST", EXPERIMENTS), ("POST", RUNS)]
    lookup, create, run = kfp_host.requests
    assert lookup.query["namespace"] == ["team-rl"]
    assert json.loads(lookup.query["filter"][0])["predicates"] == [
        {"operation": 1, "key": "display_name", "stringValue": "rlops-triggers"}]
    assert create.body == {"display_name": "rlops-triggers", "namespace": "team-rl"}
    assert {r.headers["authorization"] for r in kfp_host.requests} == {"Bearer token-from-env"}
    assert run.body["display_name"] == run_name and run.body["experiment_id"] == "exp-1"
    assert run.body["service_account"] == "rlops-pipeline"
    assert run.body["runtime_config"] == {"parameters": {**PARAMS, "model_name": "cartpole"}}
    spec = run.body["pipeline_spec"]  # compiled by the real kfp compiler, sent inline
    assert spec["pipelineInfo"]["name"] == "rlops-continuous-improvement"
    assert {"model_name", "store", "trainer"} <= set(spec["root"]["inputDefinitions"]["parameters"])
    assert "token-from-env" not in json.dumps(result)


def test_a_compiled_package_and_a_rotating_token_file(kfp_env, tmp_path):
    """The package is sent as compiled; the token file is re-read on every request (a projected token rotates)."""
    token = tmp_path / "token"
    token.write_text("first-token\n")
    fake = FakeKfp()

    def rotate(method, path, query, body):
        if path == EXPERIMENTS and method == "POST":
            token.write_text("rotated-token\n")
        return fake(method, path, query, body)

    recorder = Recorder(rotate).start()
    package = REPO_ROOT / "manifests" / "pipelines" / "agent_improvement.yaml"
    kfp_env.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    kfp_env.setenv("KFP_HOST", recorder.url)
    kfp_env.setenv("KF_PIPELINES_UI_ENDPOINT", "https://kubeflow.example.org/pipeline")
    try:
        result = trigger_action(event("triage"), write_params(tmp_path, pipeline=str(package), store="s.db",
                                                              run_name="triage-retrain", pipeline_root="s3://a/b"))
    finally:
        recorder.stop()
    assert result["run_url"] == "https://kubeflow.example.org/pipeline/#/runs/details/run-1"
    assert result["pipeline"] == str(package) and result["experiment"] == "rlops" and result["namespace"] is None
    # no namespace: kfp.Client asks healthz (once: a single-user host) before the experiment
    assert paths(recorder) == [("GET", HEALTHZ), ("GET", EXPERIMENTS), ("POST", EXPERIMENTS), ("POST", RUNS)]
    auth = [r.headers["authorization"] for r in recorder.requests]
    assert auth == ["Bearer first-token"] * 3 + ["Bearer rotated-token"]
    run = recorder.requests[-1].body
    assert run["display_name"] == "triage-retrain"
    assert run["runtime_config"] == {"parameters": {"store": "s.db", "model_name": "triage"},
                                     "pipeline_root": "s3://a/b"}
    assert run["pipeline_spec"] == yaml.safe_load(package.read_text())


def test_a_refusal_names_the_host_the_status_and_the_reason(refusing_host, kfp_env, tmp_path):
    target = KfpTarget(refusing_host.url, namespace="team-rl", token="t")
    with pytest.raises(SubmitError, match=rf"Kubeflow Pipelines at {refusing_host.url} answered 403 Forbidden "
                                          r"\(creating the run\): user is not allowed") as info:
        submit_run("continuous_improvement", {"model_name": "m", "store": "s"}, target, "r")
    assert info.value.status == 403 and info.value.host == refusing_host.url


def test_a_refused_healthz_fails_at_once(kfp_env):
    """kfp.Client retries healthz 5 times, 5 s apart; ours asks once and names the status."""
    recorder = Recorder(lambda method, path, query, body: (401, {"error": "no token", "code": 16})).start()
    try:
        with pytest.raises(SubmitError, match=r"answered 401 Unauthorized \(connecting\): no token") as info:
            submit_run("continuous_improvement", {"model_name": "m", "store": "s"}, KfpTarget(recorder.url), "r")
    finally:
        recorder.stop()
    assert info.value.status == 401 and paths(recorder) == [("GET", HEALTHZ)]


def test_an_unreachable_or_silent_host_is_a_submit_error(kfp_env):
    host = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SubmitError, match=rf"Kubeflow Pipelines at {host} is unreachable \(looking up the "
                                          r"experiment\): NewConnectionError") as info:
        submit_run("continuous_improvement", {"model_name": "m", "store": "s"}, KfpTarget(host, namespace="ns"), "r")
    assert info.value.status is None and info.value.host == host
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(SubmitError, match=rf"at {host} did not answer within 0.2 s \(connecting\)"):
            submit_run("continuous_improvement", {"model_name": "m", "store": "s"},
                       KfpTarget(host, timeout_s=0.2), "r")


@pytest.mark.parametrize(("params", "env", "match"), [
    ({"store": "s"}, {}, "needs a host: 'host' in PARAMS.json or KFP_HOST"),
    ({"host": "kfp.example.org", "store": "s"}, {}, "host 'kfp.example.org' is not an http"),
    ({"host": "http://h", "store": "s", "timeout_s": 0}, {}, "timeout_s must be a positive number"),
    ({"host": "http://h", "store": "s", "token_env": "MY_KFP_TOKEN"}, {}, "token_env names MY_KFP_TOKEN"),
    ({"host": "http://h", "store": "s", "token_file": "/no/such/token"}, {}, "token_file /no/such/token does not"),
    ({"host": "http://h", "store": "s", "pipeline": "nightly"}, {}, "pipeline 'nightly' is neither one of"),
    ({"host": "http://h", "store": "s", "trainr": "bc"}, {}, "takes no parameter 'trainr'; it takes: "),
    ({"host": "http://h"}, {}, "continuous_improvement needs store in PARAMS.json"),
])
def test_bad_parameters_fail_before_anything_is_sent(params, env, match, kfp_env, tmp_path):
    with pytest.raises(SubmitConfigError, match=match):
        trigger_action(event(), write_params(tmp_path, **params))


def test_parameters_file_errors(kfp_env, tmp_path):
    with pytest.raises(SubmitConfigError, match="needs a parameters file"):
        trigger_action(event(), None)
    with pytest.raises(SubmitConfigError, match="cannot read"):
        trigger_action(event(), str(tmp_path / "missing.json"))
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(SubmitConfigError, match="must hold a JSON object, got list"):
        trigger_action(event(), str(tmp_path / "list.json"))
    with pytest.raises(SubmitConfigError, match="no model_name"):
        trigger_action(event(model=None), write_params(tmp_path, host="http://h", store="s"))


def test_default_run_name():
    assert default_run_name("agent_improvement", "triage", "0123456789") == "rlops-agent-improvement-triage-01234567"
    assert default_run_name("/x/nightly_ci.yaml", "m", "") == "rlops-nightly-ci-m"


# --- end to end: rlops monitor --on-trigger submit-pipeline --------------------------------------


@pytest.fixture(scope="module")
def champion(mlflow_server, tmp_path_factory):
    """A registered champion and a store of its decisions: 512 normal, then ~760 with rewards cut by 10%."""
    root = tmp_path_factory.mktemp("submit-monitor")
    name = f"submit-{uuid.uuid4().hex[:8]}"
    bundle = PolicyBundle.create(EnvSpec(id="CartPole-v1"), "env", config={"hidden_sizes": [32, 32]}, seed=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        mlflow.set_tracking_uri(mlflow_server.url)
        mlflow.set_registry_uri(mlflow_server.url)
        with mlflow.start_run():
            flavor.log_model(bundle, name="policy", registered_model_name=name)
        flavor.promote(name, 1)
    with open_store(root / "store.db") as store:
        engine = DecisionEngine("policy", LoadedModel(bundle, f"models:/{name}/1", name=name, version="1"), seed=0)
        client = EngineClient(engine, store)
        simulate(client, EnvSpec(id="CartPole-v1"), 500, seed=1, episode_prefix="a")
        simulate(client, EnvSpec(id="CartPole-v1"), 750, seed=2, episode_prefix="b",
                 reward_transform=lambda r: 0.9 * r)
    return name, str(root / "store.db")


def run_monitor_cli(name, store, params):
    """``rlops monitor`` on the champion: drift:rewards:1 fires on the first window (its rewards are 10% lower)."""
    return CliRunner().invoke(monitor, [
        "--model", f"{name}@champion", "--store", store, "--reference", "production:500", "--window", "250",
        "--no-calibration", "--monitors", "rewards", "--trigger", "drift:rewards:1", "--reports", "never",
        "--experiment", "monitor-submit-test", "--on-trigger", f"submit-pipeline:{params}", "--json"],
        catch_exceptions=False)


def audit_of(name, trigger_id):
    (audit,) = [e for e in list_events(name, kinds=["trigger"]) if e.details["trigger"]["id"] == trigger_id]
    return audit


@pytest.mark.integration
def test_a_drift_trigger_of_rlops_monitor_submits_one_run_and_audits_its_id(champion, tracking, kfp_host, kfp_env,
                                                                            tmp_path):
    name, store = champion
    kfp_env.setenv("KFP_TOKEN", "monitor-token")
    params = write_params(tmp_path, host=kfp_host.url, namespace="team-rl", **PARAMS)
    result = run_monitor_cli(name, store, params)
    assert result.exit_code == 0, result.output
    assert "Experiment details" not in result.output and "Run details" not in result.output  # kfp's prints
    windows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [w["window"] for w in windows] == [0, 1, 2] and windows[0]["signals"]["rewards"]["status"] == "drift"
    (trigger,) = windows[0]["triggers"]
    spec = f"submit-pipeline:{params}"
    assert trigger["actions"][spec]["run_id"] == "run-1"

    (run,) = [r for r in kfp_host.requests if (r.method, r.path) == ("POST", RUNS)]
    assert run.body["runtime_config"]["parameters"] == {**PARAMS, "model_name": name}
    assert run.body["display_name"] == f"rlops-continuous-improvement-{name}-{trigger['id'][:8]}"
    assert run.headers["authorization"] == "Bearer monitor-token"
    audit = audit_of(name, trigger["id"])  # written after the submission, so it carries the run
    assert audit.decision == "drift:rewards:1" and audit.model_version == "1"
    assert audit.details["trigger"]["actions"][spec] == {
        "run_id": "run-1", "run_url": f"{kfp_host.url}/#/runs/details/run-1", "run_name": run.body["display_name"],
        "host": kfp_host.url, "experiment": "rlops", "experiment_id": "exp-1", "pipeline": "continuous_improvement",
        "namespace": "team-rl"}


@pytest.mark.integration
def test_a_refused_submission_is_audited_and_the_monitor_goes_on(champion, tracking, refusing_host, kfp_env,
                                                                 tmp_path):
    name, store = champion
    params = write_params(tmp_path, host=refusing_host.url, namespace="team-rl", **PARAMS)
    result = run_monitor_cli(name, store, params)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("{")]
    windows = [json.loads(line) for line in lines]
    assert [w["window"] for w in windows] == [0, 1, 2]  # the windows after the failed trigger are still evaluated
    (trigger,) = windows[0]["triggers"]
    failure = {"error": "SubmitError",
               "message": f"Kubeflow Pipelines at {refusing_host.url} answered 403 Forbidden (creating the run): "
                          "user is not allowed to create runs in namespace team-rl"}
    assert trigger["actions"][f"submit-pipeline:{params}"] == failure
    assert audit_of(name, trigger["id"]).details["trigger"]["actions"][f"submit-pipeline:{params}"] == failure
