"""Signal extraction: transitions and preference pairs from the joined decision log."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from rlops_plugin import EnvSpec, PolicyBundle, RewardSpec
from rlops_plugin.errors import IntegrityError
from rlops_plugin.experience.dataset import (
    Dataset,
    DatasetError,
    build_preferences,
    build_transitions,
    validate_preferences,
    validate_transitions,
)
from rlops_plugin.experience.feedback import parse_feedback
from rlops_plugin.experience.store import open_store
from rlops_plugin.flavor.model import LoadedModel
from rlops_plugin.serving.engine import DecisionEngine
from rlops_plugin.serving.requests import DecisionRequest
from tests.experience.test_store import make_batch


@pytest.fixture
def cartpole():
    return PolicyBundle.create(EnvSpec(id="CartPole-v1"), seed=0)


def log_episodes(store, bundle, episodes=5, truncate_last=False):
    """Play CartPole episodes through the decision engine, logging decisions and rewards."""
    engine = DecisionEngine("m", LoadedModel(bundle, "p"), seed=0)
    env = bundle.env_spec.make()
    played = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        steps = []
        for step in range(500):
            d = engine.decide(DecisionRequest(obs=np.asarray([obs], np.float32), episode_ids=[f"ep{ep}"],
                                              steps=[step]))
            store.log_decisions(d.batch)
            action = int(d.batch.actions[0])
            next_obs, reward, terminated, truncated, _ = env.step(action)
            stop = terminated or truncated or (truncate_last and ep == episodes - 1 and step == 5)
            payload = {"terminated": terminated, "truncated": stop and not terminated}
            if terminated:
                payload["next_obs"] = next_obs.tolist()
            store.add_feedback([parse_feedback({"decision_id": d.decision_ids[0], "value": float(reward),
                                                "payload": payload})])
            steps.append((obs, action, next_obs, terminated))
            obs = next_obs
            if stop:
                break
        played.append(steps)
    return played


def test_episodic_transitions_link_next_observations(tmp_path, cartpole):
    with open_store(tmp_path / "s.db") as store:
        played = log_episodes(store, cartpole, episodes=4, truncate_last=True)
        data = build_transitions(store, "m", cartpole)
    cols = data.columns
    expected = sum(len(ep) for ep in played) - 1  # the truncated episode's last step has no successor
    assert len(data) == expected and data.manifest["excluded"] == {"truncated_episode_end": 1}
    by_key = {(e, s): i for i, (e, s) in enumerate(zip(cols["episode_id"], cols["step"], strict=True))}
    for ep, steps in enumerate(played[:3]):
        for t, (obs, action, next_obs, terminated) in enumerate(steps):
            i = by_key[(f"ep{ep}", t)]
            np.testing.assert_allclose(cols["obs"][i], obs, rtol=1e-6)
            np.testing.assert_allclose(cols["next_obs"][i], next_obs, rtol=1e-6)
            assert cols["action"][i] == action and bool(cols["done"][i]) == terminated
    assert (cols["reward"] == 1.0).all() and ((cols["propensity"] > 0) & (cols["propensity"] <= 1)).all()
    assert data.manifest["env_sha"] == cartpole.hashes()["env"]


def test_bandit_transitions_and_exclusions(tmp_path, cartpole):
    with open_store(tmp_path / "s.db") as store:
        good, late, silent, bad = make_batch(3), make_batch(2), make_batch(2), make_batch(2)
        bad.propensities = np.array([np.nan, 1.5])
        late.ts = time.time() - 7200
        for batch in (good, late, silent, bad):
            batch.extra = {}
            store.log_decisions(batch)
        events = [{"decision_id": d, "value": 1.0} for d in good.decision_ids() + bad.decision_ids()]
        events += [{"decision_id": d, "value": 1.0} for d in late.decision_ids()]
        store.add_feedback([parse_feedback(e) for e in events])
        data = build_transitions(store, "m", cartpole)
    assert len(data) == 3 and data.columns["done"].all()
    np.testing.assert_array_equal(data.columns["next_obs"], data.columns["obs"])
    assert data.manifest["excluded"] == {"late": 2, "no_feedback": 2, "bad_propensity": 2}


def test_rewards_are_recomputed_with_the_bundle_reward_spec(tmp_path, cartpole, user_code_path):
    import user_rewards

    shaped = cartpole.with_policy(cartpole.policy)
    shaped.reward_spec = RewardSpec.from_function(user_rewards.upright_bonus, weight=1.0)
    with open_store(tmp_path / "s.db") as store:
        log_episodes(store, cartpole, episodes=2)
        plain = build_transitions(store, "m", cartpole)
        data = build_transitions(store, "m", shaped)
    expected = 1.0 + (0.2 - np.abs(data.columns["next_obs"][:, 2]))
    done = data.columns["done"]
    np.testing.assert_allclose(data.columns["reward"][~done], expected[~done], rtol=1e-5)
    assert data.manifest["reward_sha"] != plain.manifest["reward_sha"]


def test_empty_and_all_late_logs_are_errors(tmp_path, cartpole):
    with open_store(tmp_path / "s.db") as store:
        with pytest.raises(DatasetError, match="no decisions logged for model 'm'"):
            build_transitions(store, "m", cartpole)
        late = make_batch(2)
        late.ts, late.extra = time.time() - 7200, {}
        store.log_decisions(late)
        store.add_feedback([parse_feedback({"decision_id": d, "value": 1.0}) for d in late.decision_ids()])
        with pytest.raises(DatasetError, match=r"no usable transitions: 0 of 2 .*'late': 2"):
            build_transitions(store, "m", cartpole)


def test_action_space_mismatch(tmp_path):
    chain = PolicyBundle.create(EnvSpec(id="rlops/ContextualBandit-v0"))  # 4 actions, 5-dim contexts
    with open_store(tmp_path / "s.db") as store:
        batch = make_batch(2)
        batch.actions = np.array([0, 7])
        store.log_decisions(batch)
        with pytest.raises(DatasetError, match="logged actions range 0..7, the policy has 4 actions"):
            build_transitions(store, "m", chain)


def test_preferences_from_corrections_and_ratings(tmp_path, cartpole):
    with open_store(tmp_path / "s.db") as store:
        corrected, same = make_batch(2), make_batch(1)
        corrected.actions, same.actions = np.array([0, 1]), np.array([1])
        rated = make_batch(2)
        rated.obs[1] = rated.obs[0]
        rated.actions = np.array([0, 1])
        for b in (corrected, same, rated):
            store.log_decisions(b)
        c, s_, r = corrected.decision_ids(), same.decision_ids(), rated.decision_ids()
        store.add_feedback([parse_feedback(e) for e in (
            {"decision_id": c[0], "kind": "correction", "action": 1},
            {"decision_id": c[1], "kind": "correction", "action": 0},
            {"decision_id": s_[0], "kind": "correction", "action": 1},
            {"decision_id": r[0], "kind": "rating", "value": 1},
            {"decision_id": r[1], "kind": "rating", "value": 5})])
        data = build_preferences(store, "m", cartpole)
    cols = data.columns
    assert sorted(zip(cols["chosen"].tolist(), cols["rejected"].tolist(), cols["source"].tolist(), strict=True)) == [
        (0, 1, "correction"), (1, 0, "correction"), (1, 0, "rating")]
    assert data.manifest["excluded"] == {"same_pair": 1}


def test_save_load_digest_and_tampering(tmp_path, cartpole):
    with open_store(tmp_path / "s.db") as store:
        log_episodes(store, cartpole, episodes=2)
        data = build_transitions(store, "m", cartpole)
    path = data.save(tmp_path / "ds")
    loaded = Dataset.load(path)
    assert loaded.digest == data.digest == json.loads((path / "dataset.json").read_text())["digest"]
    for name in data.columns:
        np.testing.assert_array_equal(loaded.columns[name], data.columns[name])
    import pyarrow.parquet as pq

    table = pq.read_table(path / "data.parquet")
    rewards = table.column("reward").to_numpy().copy()
    rewards[0] = 99.0
    pq.write_table(table.set_column(table.column_names.index("reward"), "reward", [rewards]), path / "data.parquet")
    with pytest.raises(IntegrityError, match="digest .* differs from the manifest"):
        Dataset.load(path)


def test_validation_counts_and_excludes_bad_rows():
    data = Dataset("transitions", {"obs": np.zeros((4, 2), np.float32), "action": np.array([0, 1, 0, 1]),
                                   "propensity": np.array([0.5, 0.0, 1.2, 0.5]),
                                   "reward": np.array([1.0, 1.0, 1.0, np.nan]),
                                   "next_obs": np.zeros((4, 2), np.float32), "done": np.ones(4, bool)})
    kept, counts = validate_transitions(data, discrete=True)
    assert len(kept) == 1 and counts == {"nan_reward": 1, "bad_propensity": 2}
    prefs = Dataset("preferences", {"obs": np.zeros((3, 2), np.float32), "chosen": np.array([1, 1, 5]),
                                    "rejected": np.array([0, 1, 0])})
    kept, counts = validate_preferences(prefs, n_actions=2)
    assert len(kept) == 1 and counts == {"same_pair": 1, "action_out_of_range": 1}
    with pytest.raises(DatasetError, match="all 1 preference pairs are unusable"):
        validate_preferences(Dataset("preferences", {"obs": np.zeros((1, 2)), "chosen": np.array([1]),
                                                     "rejected": np.array([1])}), 2)
