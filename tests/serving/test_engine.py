"""The decision engine: exact propensities under exploration, masks, shields, shadow and canary."""

import types

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlops_plugin import EnvSpec, Policy, PolicyBundle, hookimpl, plugins
from rlops_plugin.errors import ConfigError, InvalidObservationError
from rlops_plugin.flavor.model import LoadedModel
from rlops_plugin.serving.engine import DecisionEngine
from rlops_plugin.serving.exploration import ExplorationConfig
from rlops_plugin.serving.guards import Veto
from rlops_plugin.serving.requests import DecisionRequest
from rlops_plugin.serving.routing import RoutingConfig


def loaded(seed, name="m", version="1", env="CartPole-v1"):
    bundle = PolicyBundle.create(EnvSpec(id=env), seed=seed)
    return LoadedModel(bundle, f"models:/{name}/{version}", name, version)


OBS = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)


def test_propensity_is_the_probability_of_the_executed_action():
    engine = DecisionEngine("m", loaded(0), exploration=ExplorationConfig("epsilon", epsilon=0.2), seed=1)
    out = engine.decide(DecisionRequest(obs=OBS))
    b = out.batch
    np.testing.assert_allclose(b.propensities, b.probs[np.arange(64), b.actions])
    assert set(np.round(b.propensities, 6)) <= {0.9, 0.1}
    assert b.policies == ["m/1@" + engine.champion.bundle.bundle_sha[:12]]
    rows = out.response_rows()
    assert rows[0]["decision_id"] == f"{b.batch_id}-0" and rows[0]["decided_by"] == "champion"


def test_single_and_batch_paths_agree_on_distribution():
    engine = DecisionEngine("m", loaded(0), seed=1)
    single = engine.decide(DecisionRequest(obs=OBS[:1])).batch
    batch = engine.decide(DecisionRequest(obs=OBS)).batch
    np.testing.assert_allclose(single.probs[0], batch.probs[0], rtol=1e-6)


def test_mask_is_respected_and_logged():
    engine = DecisionEngine("m", loaded(0), seed=1)
    mask = np.tile([False, True], (64, 1))
    b = engine.decide(DecisionRequest(obs=OBS, masks=mask)).batch
    assert (b.actions == 1).all() and np.allclose(b.propensities, 1.0) and b.extra["masked"]
    with pytest.raises(InvalidObservationError, match="forbids every action"):
        engine.decide(DecisionRequest(obs=OBS[:2], masks=np.zeros((2, 2), bool)))


class _PushRightShield:
    """Vetoes action 0 when the pole leans right (obs[2] > 0), substituting action 1."""

    @hookimpl
    def rlops_shield(self, observation, action, context):
        if action == 0 and observation[2] > 0:
            return Veto(1, "pole leans right: pushing left is unsafe")
        return None


@pytest.fixture
def shield():
    plugins.get_plugin_manager().register(_PushRightShield(), name="push-right-shield")
    yield
    plugins.reset()


def test_shield_vetoes_with_exact_propensities(shield):
    engine = DecisionEngine("m", loaded(0), seed=3)
    obs = np.tile(np.array([[0.0, 0.0, 0.1, 0.0], [0.0, 0.0, -0.1, 0.0]], dtype=np.float32), (4000, 1))
    b = engine.decide(DecisionRequest(obs=obs)).batch
    leaning = obs[:, 2] > 0
    assert (b.actions[leaning] == 1).all()
    np.testing.assert_allclose(b.propensities[leaning], 1.0)  # both proposals end as action 1
    assert not np.allclose(b.propensities[~leaning], 1.0)
    vetoes = b.extra["vetoes"]
    assert vetoes and all(v["proposed"] == 0 and v["executed"] == 1 for v in vetoes)
    assert vetoes[0]["reason"] == "pole leans right: pushing left is unsafe"
    # a veto happens exactly when action 0 is proposed in a right-leaning state
    assert abs(len(vetoes) / leaning.sum() - engine_prob0(engine, obs[0])) < 0.03


def engine_prob0(engine, obs):
    with torch.no_grad():
        return float(torch.softmax(engine.champion.bundle.policy.network(torch.as_tensor(obs[None])), -1)[0, 0])


def test_shadow_scores_but_never_decides():
    champion, challenger = loaded(0), loaded(1, version="2")
    engine = DecisionEngine("m", champion, challenger, routing=RoutingConfig("shadow"), seed=0)
    b = engine.decide(DecisionRequest(obs=OBS)).batch
    assert not b.decided_by.any()
    assert b.shadow_policy == challenger.policy_version
    expected = torch.softmax(challenger.bundle.policy.network(torch.as_tensor(OBS)), -1).detach().numpy()
    np.testing.assert_allclose(b.shadow_probs, expected, rtol=1e-5)


def test_canary_share_and_sticky_keys():
    engine = DecisionEngine("m", loaded(0), loaded(1, version="2"), routing=RoutingConfig("canary", 0.3), seed=0)
    b = engine.decide(DecisionRequest(obs=np.zeros((5000, 4), np.float32))).batch
    assert abs(b.decided_by.mean() - 0.3) < 0.03
    keys = ["alice"] * 50
    sticky = engine.decide(DecisionRequest(obs=np.zeros((50, 4), np.float32), routing_keys=keys)).batch
    assert len(set(sticky.decided_by.tolist())) == 1


def test_box_policy_decisions_have_densities():
    base = PolicyBundle.create(EnvSpec(id="rlops/ChainWalk-v0"))
    torch.manual_seed(0)
    box = Policy("mlp", {}, base.policy.observation_space, gym.spaces.Box(-1, 1, shape=(2,)))
    lm = LoadedModel(PolicyBundle(box, base.env_spec, base.reward_spec), "path")
    engine = DecisionEngine("m", lm, seed=0)
    b = engine.decide(DecisionRequest(obs=np.eye(6, dtype=np.float32))).batch
    assert b.actions.shape == (6, 2) and (b.propensities > 0).all() and b.probs is None
    greedy = DecisionEngine("m", lm, exploration=ExplorationConfig("greedy")).decide(
        DecisionRequest(obs=np.eye(6, dtype=np.float32))).batch
    assert np.isnan(greedy.propensities).all()
    with pytest.raises(ConfigError, match="epsilon exploration needs a Discrete"):
        DecisionEngine("m", lm, exploration=ExplorationConfig("epsilon", epsilon=0.1))


def test_mismatched_challenger_is_refused():
    with pytest.raises(ConfigError, match="champion and challenger observations"):
        DecisionEngine("m", loaded(0), loaded(0, env="rlops/ChainWalk-v0"), routing=RoutingConfig("shadow"))
    with pytest.raises(ConfigError, match="needs a challenger"):
        DecisionEngine("m", loaded(0), routing=RoutingConfig("canary", 0.1))


def test_shield_returning_garbage_is_a_plugin_error():
    from rlops_plugin.errors import PluginError

    bad = types.SimpleNamespace(rlops_shield=hookimpl(lambda observation, action, context: "no"))
    plugins.get_plugin_manager().register(bad, name="bad-shield")
    try:
        with pytest.raises(PluginError, match="rlops_shield returned 'no'"):
            DecisionEngine("m", loaded(0)).decide(DecisionRequest(obs=OBS[:2]))
    finally:
        plugins.reset()
