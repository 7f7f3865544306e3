"""Sticky canaries on a cluster: the rlops-kserve target routes episodic canaries by routing key.

The target's objects are checked against a recording Kubernetes API; then the predictor the in-pod object
describes runs as a real server process on CartPole traffic, and so do the two revisions of KServe's split.
"""

from __future__ import annotations

import mlflow.deployments
import numpy as np
import pytest

from rlops_plugin.bundle.env_spec import EnvSpec
from rlops_plugin.deploy.kserve import KServeDeployments, canary_split
from rlops_plugin.deploy.sequential import NO_DATA, sequential_test
from rlops_plugin.deploy.validation import validate_manifest
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.join import JoinConfig, join_feedback
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor.model import load_model_with_source
from rlops_plugin.kinds.vector import VECTOR, episode_returns
from rlops_plugin.simulation.traffic import DecisionClient, simulate
from tests.fixtures.recorder import FakeCustomObjects, Recorder, write_kubeconfig

CFG = {"tracking_uri": "http://mlflow.rlops:5000", "kind": "vector"}
FRACTION = 0.5
DECISIONS = 2400


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    recorder = Recorder(FakeCustomObjects()).start()
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path / "kubeconfig", recorder.url))
    monkeypatch.setenv("RLOPS_STORE", "postgresql://rlops@db/rlops")
    yield recorder
    recorder.stop()


def env_of(obj):
    return {e["name"]: e["value"] for e in obj["spec"]["predictor"]["model"]["env"]}


def test_the_split_follows_the_canary_metric():
    assert canary_split("auto", "episode") == canary_split("auto", "session") == "in-pod"
    assert canary_split("auto", None) == "in-pod"  # undeclared: sticky is right for every metric
    assert canary_split("auto", "decision") == "kserve"
    assert canary_split("kserve", None) == canary_split("kserve", "decision") == "kserve"
    assert canary_split("in-pod", "decision") == "in-pod"
    assert canary_split("kserve", "episode", force_split=True) == "kserve"
    with pytest.raises(ConfigError, match="canary_strategy='in-pod'.*force_split=true"):
        canary_split("kserve", "episode", name="cartpole")
    with pytest.raises(ConfigError, match="canary metric must be one of"):
        canary_split("auto", "reward")
    with pytest.raises(ConfigError, match="canary_strategy must be one of"):
        canary_split("istio", "episode")


def test_an_episode_canary_is_sent_in_pod_and_kserve_split_needs_force(cluster):
    client = mlflow.deployments.get_deploy_client("rlops-kserve:/rlops")
    client.create_deployment("cartpole", "models:/cartpole/1", config={**CFG, "metric": "episode"})
    assert cluster.requests[-1].body["metadata"]["annotations"]["rlops.io/canary-metric"] == "episode"
    # the metric recorded at create picks the split of every later canary (the controller passes none)
    client.update_deployment("cartpole", "models:/cartpole/2", config={**CFG, "mode": "canary", "fraction": "0.25"})
    patch = cluster.requests[-1]
    assert patch.method == "PATCH"
    assert "canaryTrafficPercent" not in patch.body["spec"]["predictor"]
    env = env_of(patch.body)
    assert (env["RLOPS_MODEL_URI"], env["RLOPS_CHALLENGER_URI"]) == ("models:/cartpole/1", "models:/cartpole/2")
    assert (env["RLOPS_ROUTING"], env["RLOPS_CANARY_FRACTION"]) == ("canary", "0.25")
    assert patch.body["metadata"]["annotations"]["rlops.io/canary-strategy"] == "in-pod"
    stored = client.get_deployment("cartpole")
    validate_manifest({k: v for k, v in stored.items() if k not in ("status", "name", "flavor")})

    forced = {**CFG, "canary_strategy": "kserve", "mode": "canary", "fraction": "0.25"}
    with pytest.raises(mlflow.exceptions.MlflowException, match="metric='episode'.*force_split=true"):
        client.update_deployment("cartpole", "models:/cartpole/2", config=forced)
    assert cluster.requests[-1].method == "GET"  # refused before anything was sent
    split = client.update_deployment("cartpole", "models:/cartpole/2", config={**forced, "force_split": "true"})
    assert split["spec"]["predictor"]["canaryTrafficPercent"] == 25
    with pytest.raises(mlflow.exceptions.MlflowException, match="expected true or false"):
        client.update_deployment("cartpole", "models:/cartpole/2", config={**forced, "force_split": "maybe"})


class RevisionSplit(DecisionClient):
    """KServe's ``canaryTrafficPercent`` as Knative applies it: each request goes to one revision at random."""

    def __init__(self, latest: str, previous: str, fraction: float, seed: int) -> None:
        super().__init__(previous, model="cartpole")
        self.latest, self.previous = latest, previous
        self.fraction = fraction
        self.rng = np.random.default_rng(seed)

    def decide(self, instances):
        """POST the whole request to the latest revision with probability ``fraction``, else the previous one."""
        url = self.latest if self.rng.random() < self.fraction else self.previous
        r = self.http.post(f"{url}/v1/models/{self.model}:predict", json={"instances": instances})
        r.raise_for_status()
        return r.json()["predictions"]


def _samples(store_path, champion, challenger):
    with open_store(store_path) as store:
        frame = join_feedback(store, JoinConfig()).decisions
        samples = VECTOR.canary_samples(store, model=None, since=0, champion=champion, challenger=challenger,
                                        metric="episode", join=JoinConfig())
    ended = frame[frame["episode_id"].notna()].groupby("episode_id")["episode_end"].apply(lambda s: s.notna().any())
    kept = sum(len(v) for v in episode_returns(frame).values())
    return samples, int(ended.sum()), kept


@pytest.mark.integration
def test_sticky_canary_feeds_the_episode_test_and_the_per_request_split_starves_it(cluster, model_dirs,
                                                                                   start_server, tmp_path):
    """The same CartPole traffic (2400 decisions, 16 envs, seeds 0, episode ids ``ep-N``) at a 50% canary, measured:

    * in-pod (what ``auto`` sends for ``metric="episode"``): 101 episodes ended, 101 kept (0 mixed), 58
      challenger / 43 champion returns: the episode-level sequential test is fed (``continue``, not ``no_data``);
    * KServe's per-request split (two revisions, one random revision per request): 105 episodes ended, 0
      kept (an episode of L >= 8 steps stays on one revision with probability 2 * 0.5^L <= 0.8%), so the test
      says ``no_data`` for as long as it runs. The assertions use bounds (>= 30 per arm, <= 5% kept).
    """
    k = KServeDeployments("rlops", tracking_uri="http://mlflow.rlops:5000")
    k.create("cartpole", model_dirs["champion"], metric="episode")
    previous_env = env_of(k.get("cartpole"))
    in_pod = k.configure("cartpole", model_dirs["champion"], model_dirs["challenger"], "canary", FRACTION)
    assert "canaryTrafficPercent" not in in_pod["spec"]["predictor"]
    champion = load_model_with_source(model_dirs["champion"]).policy_version
    challenger = load_model_with_source(model_dirs["challenger"]).policy_version
    assert champion != challenger

    def serve(env, store):  # the predictor an object describes, as a real server process
        env = {k_: v for k_, v in env.items() if k_ not in ("MLFLOW_TRACKING_URI", "RLOPS_STORE")}
        return start_server(env["RLOPS_MODEL_URI"], store=str(store), env=env, name="cartpole",
                            extra_args=["--seed", "0"])

    spec = EnvSpec(id="CartPole-v1")
    sticky_store = tmp_path / "sticky.db"
    server = serve(env_of(in_pod), sticky_store)
    client = DecisionClient(server.url, model="cartpole")
    stats = simulate(client, spec, DECISIONS, n_envs=16, seed=0, episode_prefix="ep")
    client.close()
    sticky, ended, kept = _samples(sticky_store, champion, challenger)
    assert ended >= 60 and stats.episodes == ended
    assert kept == ended  # no episode dropped as mixed
    assert len(sticky.challenger) + len(sticky.champion) == ended
    assert min(len(sticky.challenger), len(sticky.champion)) >= 30  # both arms reach min_samples
    assert sequential_test(sticky.challenger, sticky.champion).verdict != NO_DATA

    forced = KServeDeployments("rlops", tracking_uri="http://mlflow.rlops:5000", canary_strategy="kserve")
    split = forced.configure("cartpole", model_dirs["champion"], model_dirs["challenger"], "canary", FRACTION,
                             force_split=True)
    assert split["spec"]["predictor"]["canaryTrafficPercent"] == 50
    split_store = tmp_path / "split.db"
    latest, previous = serve(env_of(split), split_store), serve(previous_env, split_store)
    router = RevisionSplit(latest.url, previous.url, FRACTION, seed=0)
    stats = simulate(router, spec, DECISIONS, n_envs=16, seed=0, episode_prefix="ep")
    router.close()
    mixed, ended, kept = _samples(split_store, champion, challenger)
    assert ended >= 60 and stats.episodes == ended
    assert kept <= 0.05 * ended  # almost every episode met both revisions and was dropped
    assert sequential_test(mixed.challenger, mixed.champion).verdict == NO_DATA
