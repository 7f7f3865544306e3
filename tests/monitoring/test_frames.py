"""The monitoring frame from a real store: version filter, feedback join, episode returns."""

import time

import numpy as np
import pandas as pd

from rlops_plugin.experience.feedback import parse_feedback
from rlops_plugin.experience.records import DecisionBatch, new_batch_id
from rlops_plugin.experience.store import open_store
from rlops_plugin.monitoring.frames import (
    EpisodeCarry,
    add_episode_returns,
    attach_feedback,
    entropy,
    load_decisions,
)

CHAMP, CHALL = "m/1@aaaaaaaaaaaa", "m/2@bbbbbbbbbbbb"


def batch(n, decided_by, episode="e", start_step=0, model="policy"):
    rng = np.random.default_rng(n + start_step)
    probs = rng.dirichlet([1, 1], size=n)
    actions = rng.integers(0, 2, size=n)
    return DecisionBatch(new_batch_id(), time.time(), model, rng.normal(size=(n, 4)).astype(np.float32), actions,
                         probs[np.arange(n), actions], probs, np.asarray(decided_by, np.uint8), [CHAMP, CHALL],
                         extra={"episode_ids": [episode] * n, "steps": list(range(start_step, start_step + n)),
                                "exploration": {"mode": "softmax", "temperature": 1.0}})


def test_load_filters_by_policy_version_and_served_name(tmp_path):
    with open_store(tmp_path / "s.db") as store:
        first = batch(4, [0, 1, 0, 1])
        store.log_decisions(first)
        store.log_decisions(batch(3, [0, 0, 0], model="other"))
        champion = load_decisions(store, policy_version=CHAMP)
        assert len(champion.frame) == 5 and set(champion.frame["policy_version"]) == {CHAMP}
        assert champion.frame["idx"].tolist()[:2] == [0, 2]
        assert champion.exploration == {"mode": "softmax", "temperature": 1.0}
        served = load_decisions(store, policy_version=CHAMP, model="policy")
        assert len(served.frame) == 2
        frame = load_decisions(store, policy_version=CHALL).frame
        np.testing.assert_allclose(frame[["prob_0", "prob_1"]].to_numpy(), first.probs[[1, 3]])
        np.testing.assert_allclose(frame["entropy"], entropy(first.probs[[1, 3]]))
        assert frame["obs_3"].dtype == np.float64 and frame["action"].tolist() == first.actions[[1, 3]].tolist()
        assert load_decisions(store, policy_version="m/9@cccccccccccc").frame.empty
        later = load_decisions(store, since_seq=champion.last_seq)
        assert later.frame.empty and later.last_seq == champion.last_seq


def test_feedback_is_summed_and_episode_ends_joined(tmp_path):
    with open_store(tmp_path / "s.db") as store:
        b = batch(3, [0, 0, 0])
        store.log_decisions(b)
        ids = b.decision_ids()
        now = time.time()
        store.add_feedback([
            parse_feedback({"decision_id": ids[0], "value": 1.0, "idempotency_key": "a"}, now=now),
            parse_feedback({"decision_id": ids[0], "value": 0.5, "idempotency_key": "b"}, now=now),
            parse_feedback({"decision_id": ids[2], "value": 2.0, "payload": {"terminated": True},
                            "idempotency_key": "c"}, now=now),
        ])
        frame = attach_feedback(load_decisions(store).frame, store)
        assert frame["reward"].tolist()[0] == 1.5 and np.isnan(frame["reward"][1]) and frame["reward"][2] == 2.0
        assert frame["n_rewards"].tolist() == [2, 0, 1]
        assert frame["episode_end"].tolist() == [None, None, "terminated"] or frame["episode_end"].isna().tolist() \
            == [True, True, False]


def test_episode_returns_carry_across_windows_and_need_every_reward():
    frame = pd.DataFrame({"episode_id": ["a", "a", "b", "b", "c"], "step": [0.0, 1, 0, 1, 3],
                          "reward": [1.0, 1.0, 1.0, np.nan, 1.0], "episode_end": [None, None, None, None, None]})
    carry = add_episode_returns(frame)
    assert frame["episode_return"].isna().all()
    assert carry.sums == {"a": 2.0, "b": 1.0, "c": 1.0} and carry.missing == {"a": 0, "b": 1, "c": 1}
    later = pd.DataFrame({"episode_id": ["a", "b", "c", "d"], "step": [2.0, 2, 4, 0],
                          "reward": [1.0, 1.0, 1.0, 5.0], "episode_end": ["terminated", "truncated", "terminated",
                                                                         "terminated"]})
    carry = add_episode_returns(later, carry)
    # a: 3 known rewards; b: one reward missing; c: its start was never seen; d: one-step episode
    assert later["episode_return"].tolist()[0] == 3.0 and later["episode_return"].tolist()[3] == 5.0
    assert later["episode_return"].isna().tolist() == [False, True, True, False]
    assert carry == EpisodeCarry({}, {})
