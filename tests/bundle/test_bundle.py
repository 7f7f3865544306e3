import json

import numpy as np
import pytest

from rlops_plugin import EnvSpec, Policy, PolicyBundle, RewardSpec
from rlops_plugin.errors import ConfigError, SpaceMismatchError


def test_save_load_round_trip_keeps_hashes_and_actions(tmp_path, cartpole_bundle):
    manifest = cartpole_bundle.save(tmp_path / "b")
    assert manifest["hashes"] == cartpole_bundle.hashes()
    loaded = PolicyBundle.load(tmp_path / "b")
    assert loaded.hashes() == cartpole_bundle.hashes()
    obs = np.random.default_rng(0).normal(size=(100, 4))
    expected, _ = cartpole_bundle.policy.act(obs, deterministic=True)
    assert (loaded.policy.act(obs, deterministic=True)[0] == expected).all()
    stored_source = tmp_path / "b" / "reward" / "source" / cartpole_bundle.reward_spec.source_file
    assert "def env_reward" in stored_source.read_text()


def test_each_part_changes_the_bundle_hash(cartpole_bundle):
    base = cartpole_bundle.hashes()
    other_env = PolicyBundle(cartpole_bundle.policy, cartpole_bundle.env_spec.replace(params={"length": 0.7}),
                             cartpole_bundle.reward_spec)
    other_reward = PolicyBundle(cartpole_bundle.policy, cartpole_bundle.env_spec, RewardSpec(ref="scaled"))
    retrained = cartpole_bundle.policy.clone()
    with __import__("torch").no_grad():
        next(retrained.parameters()).add_(0.01)
    other_policy = cartpole_bundle.with_policy(retrained, parent_version="1")
    assert other_env.hashes()["env"] != base["env"] and other_env.bundle_sha != base["bundle"]
    assert other_reward.hashes()["reward"] != base["reward"] and other_reward.bundle_sha != base["bundle"]
    assert other_policy.hashes()["policy"] != base["policy"] and other_policy.bundle_sha != base["bundle"]


def test_lineage_is_stored_but_not_hashed(tmp_path, cartpole_bundle):
    child = cartpole_bundle.with_policy(cartpole_bundle.policy.clone(), parent_version="3",
                                        dataset_digest="sha256:abc", trainer="cql", trainer_config={"lr": 1e-3})
    assert child.bundle_sha == cartpole_bundle.bundle_sha
    child.save(tmp_path / "c")
    assert PolicyBundle.load(tmp_path / "c").lineage["trainer_config"] == {"lr": 1e-3}
    with pytest.raises(ConfigError, match="unknown keys"):
        cartpole_bundle.with_policy(cartpole_bundle.policy, parentt="1")


def test_save_refuses_a_non_empty_directory(tmp_path, cartpole_bundle):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("")
    with pytest.raises(ConfigError, match="must be empty"):
        cartpole_bundle.save(tmp_path / "x")


def test_space_mismatch_between_policy_and_env_is_named(cartpole_bundle):
    chain = EnvSpec(id="rlops/ChainWalk-v0")
    wrong = PolicyBundle(cartpole_bundle.policy, chain, cartpole_bundle.reward_spec)
    with pytest.raises(SpaceMismatchError, match="observation spaces differ"):
        wrong.check_spaces()
    chain_policy = PolicyBundle.create(chain).policy
    with pytest.raises(SpaceMismatchError, match="action spaces"):
        cartpole_bundle.with_policy(Policy("mlp", {}, chain_policy.observation_space,
                                           __import__("gymnasium").spaces.Discrete(3)))


def test_summary_is_json(cartpole_bundle):
    summary = json.loads(json.dumps(cartpole_bundle.summary()))
    assert summary["env_spec"]["id"] == "CartPole-v1"
    assert summary["policy"]["action_space"] == {"type": "Discrete", "n": 2, "start": 0}
