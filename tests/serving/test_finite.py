"""The broken-policy shield: NaN policies refused at load, non-finite outputs fall back, never a 500."""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest
import torch

from rlops_plugin import EnvSpec, PolicyBundle, flavor
from rlops_plugin.errors import BrokenPolicyError, ConfigError
from rlops_plugin.flavor.model import LoadedModel
from rlops_plugin.serving.engine import DecisionEngine
from rlops_plugin.serving.exploration import ExplorationConfig
from rlops_plugin.serving.finite import probe_observations
from rlops_plugin.serving.requests import DecisionRequest
from rlops_plugin.serving.routing import RoutingConfig

HUGE = 1e30  # finite, so the request is valid; the fragile policy below overflows on it


def _bundle(seed: int, env: str = "CartPole-v1", edit=None) -> PolicyBundle:
    config = {"activation": "relu"} if edit is fragile else None
    bundle = PolicyBundle.create(EnvSpec(id=env), config=config, seed=seed)
    if edit is None:
        return bundle
    policy = bundle.policy.clone()
    with torch.no_grad():
        edit(policy.network)
    return bundle.with_policy(policy)


def nan_weights(network):
    next(network.parameters()).view(-1)[0] = float("nan")


def fragile(network):
    """A ReLU policy that is finite on the observations its space makes likely (logits ~1e10 at most) and
    overflows to inf/NaN once an unbounded input is astronomically large: one product 1e10 * 1e30 exceeds
    float32 in any kernel, and ReLU passes the inf on (tanh would saturate it away)."""
    first = next(p for p in network.parameters() if p.dim() == 2)
    first[:, 1] = 1e10


def _loaded(bundle, version):
    return LoadedModel(bundle, f"models:/m/{version}", "m", version)


def test_a_policy_with_nan_weights_is_refused_at_load_for_either_role():
    good, bad = _loaded(_bundle(0), "1"), _loaded(_bundle(1, edit=nan_weights), "2")
    with pytest.raises(BrokenPolicyError, match=r"champion m/2@\w+: non-finite outputs .* on 64 of 64 probe"):
        DecisionEngine("m", bad)
    with pytest.raises(BrokenPolicyError, match="challenger m/2"):
        DecisionEngine("m", good, bad, routing=RoutingConfig("canary", 0.5))
    box = _loaded(_bundle(0, "Pendulum-v1", edit=nan_weights), "3")
    with pytest.raises(BrokenPolicyError, match="champion m/3"):
        DecisionEngine("m", box)


def test_probe_observations_lie_in_the_space():
    import gymnasium as gym

    space = gym.make("CartPole-v1").observation_space
    obs = probe_observations(space, 4)
    assert obs.shape == (64, 4) and np.isfinite(obs).all() and all(space.contains(o) for o in obs)


def _obs(n, broken):
    obs = np.zeros((n, 4), dtype=np.float32)
    obs[broken, 1] = HUGE
    return obs


@pytest.mark.parametrize("n", [1, 8])
def test_a_broken_challenger_row_is_decided_by_the_champion(n):
    champion, challenger = _loaded(_bundle(0), "1"), _loaded(_bundle(1, edit=fragile), "2")
    engine = DecisionEngine("m", champion, challenger, routing=RoutingConfig("canary", 1.0), seed=0)
    broken = [0] if n == 1 else [1, 5]
    out = engine.decide(DecisionRequest(obs=_obs(n, broken)))
    b = out.batch
    assert np.isfinite(b.propensities).all() and (b.propensities > 0).all()
    np.testing.assert_allclose(b.propensities, b.probs[np.arange(n), b.actions])
    assert [int(k) for k in b.decided_by[broken]] == [0] * len(broken)  # the champion decided those rows
    assert b.extra["fallbacks"] == [{"i": i, "from": "challenger", "to": "champion"} for i in broken]
    rows = out.response_rows()
    assert [r.get("fallback") for r in rows] == ["champion" if i in broken else None for i in range(n)]
    assert engine.fallbacks.counts == {"challenger->champion": len(broken)}


def test_a_broken_champion_row_takes_the_safe_action_or_is_refused():
    fragile_champion = _loaded(_bundle(0, edit=fragile), "1")
    engine = DecisionEngine("m", fragile_champion, seed=0)
    with pytest.raises(BrokenPolicyError, match=r"for 1 of 3 observations \(instances \[2\]\).*no safe_action"):
        engine.decide(DecisionRequest(obs=_obs(3, [2])))
    safe = DecisionEngine("m", fragile_champion, exploration=ExplorationConfig(safe_action=1), seed=0)
    b = safe.decide(DecisionRequest(obs=_obs(3, [2]))).batch
    assert int(b.actions[2]) == 1 and b.propensities[2] == 1.0 and b.probs[2].tolist() == [0.0, 1.0]
    assert b.extra["fallbacks"] == [{"i": 2, "from": "champion", "to": "safe_action"}]
    assert np.isfinite(b.probs).all()


def test_box_policies_fall_back_too():
    fragile_box = _loaded(_bundle(0, "Pendulum-v1", edit=fragile), "1")
    engine = DecisionEngine("m", fragile_box, exploration=ExplorationConfig(safe_action=[0.0]), seed=0)
    obs = np.zeros((4, 3), dtype=np.float32)
    obs[3, 1] = HUGE
    b = engine.decide(DecisionRequest(obs=obs)).batch
    assert b.actions[3].tolist() == [0.0] and np.isnan(b.propensities[3])  # deterministic: no density, flagged
    assert np.isfinite(b.propensities[:3]).all() and b.extra["fallbacks"][0]["to"] == "safe_action"


def test_a_safe_action_outside_the_space_is_refused():
    with pytest.raises(ConfigError, match="safe_action 7 is not an action of Discrete"):
        DecisionEngine("m", _loaded(_bundle(0), "1"), exploration=ExplorationConfig(safe_action=7))
    with pytest.raises(ConfigError, match="safe_action must be"):
        ExplorationConfig(safe_action=[float("nan")])


@pytest.mark.integration
def test_the_server_never_answers_500_for_a_broken_policy(start_server, tmp_path):
    """Against a real server: refused at start and on /configure; 503 without a safe action; fallback with one."""
    dirs = {}
    for name, bundle in (("good", _bundle(0)), ("nan", _bundle(1, edit=nan_weights)),
                         ("fragile", _bundle(2, edit=fragile))):
        flavor.save_model(bundle, tmp_path / name)
        dirs[name] = str(tmp_path / name)
    refused = subprocess.run([sys.executable, "-m", "rlops_plugin.cli", "serve", dirs["nan"], "--http_port", "0"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "BrokenPolicyError: champion" in refused.stderr
    assert "Traceback" not in refused.stderr

    store = str(tmp_path / "log.db")
    server = start_server(dirs["fragile"], store=store)
    body = {"instances": [[0.0, 0.0, 0.0, 0.0], [0.0, HUGE, 0.0, 0.0]]}
    r = httpx.post(server.predict_url, json=body, timeout=30)
    assert r.status_code == 503 and "no safe_action" in r.json()["error"], r.text
    configure = f"{server.url}/rlops/v1/models/policy/configure"
    r = httpx.post(configure, json={"challenger_uri": dirs["nan"], "routing": {"mode": "canary", "fraction": 0.5}},
                   timeout=60)
    assert r.status_code == 422 and "BrokenPolicyError: challenger" in r.text
    r = httpx.post(configure, json={"exploration": {"mode": "softmax", "safe_action": 0}}, timeout=60)
    assert r.status_code == 200, r.text
    rows = httpx.post(server.predict_url, json=body, timeout=30).json()["predictions"]
    assert rows[1]["action"] == 0 and rows[1]["propensity"] == 1.0 and rows[1]["fallback"] == "safe_action"
    assert "fallback" not in rows[0] and 0 < rows[0]["propensity"] < 1
    status = httpx.get(f"{server.url}/rlops/v1/status", timeout=30).json()
    assert status["models"][0]["fallbacks"] == {"champion->safe_action": 1}
    assert status["store"]["decisions"] == 2  # the refused request logged nothing
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert 'rlops_policy_fallbacks_total{model="policy",role="champion",to="safe_action"} 1.0' in metrics
    assert 'to="refused"} 1.0' in metrics
