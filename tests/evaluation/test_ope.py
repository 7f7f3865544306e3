"""Off-policy estimators against values known in closed form, then every refusal."""

import json
import math

import numpy as np
import pytest

from rlops_plugin.errors import RLOpsError
from rlops_plugin.evaluation.ope import (
    Episode,
    FQEConfig,
    OPEError,
    direct_method,
    doubly_robust,
    episodes_to_transitions,
    evaluate_bandit,
    evaluate_episodic,
    fit_reward_model,
    fitted_q_evaluation,
    ips,
    per_decision_wis,
    snips,
)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def linear_bandit(n, seed, noise=0.5):
    """Contexts N(0, I_3), q(x, a) = 0.5 + 0.2 theta_a . x, softmax behaviour, sign-of-x0 deterministic target.

    Truth: E[q(x, 0); x0 > 0] + E[q(x, 1); x0 < 0] = 0.5 + 0.2 (theta_00 - theta_10) / sqrt(2 pi).
    """
    theta = np.array([[1.0, 0.5, -0.5], [-1.0, 0.3, 0.2], [0.4, -0.8, 0.6]])
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    q = 0.5 + 0.2 * x @ theta.T
    behaviour = 0.8 * softmax(x @ theta.T) + 0.2 / 3
    a = np.array([rng.choice(3, p=p) for p in behaviour])
    r = q[np.arange(n), a] + rng.normal(0.0, noise, n)
    target = np.zeros((n, 3))
    target[np.arange(n), np.where(x[:, 0] > 0, 0, 1)] = 1.0
    truth = 0.5 + 0.2 * (theta[0, 0] - theta[1, 0]) / math.sqrt(2 * math.pi)
    return dict(rewards=r, actions=a, propensities=behaviour[np.arange(n), a], target_probs=target), x, q, behaviour, \
        truth


# ----- one-step estimators -----------------------------------------------------------------------

def test_target_equal_to_behaviour_gives_the_sample_mean_with_unit_weights():
    rng = np.random.default_rng(0)
    n, probs = 500, np.array([0.2, 0.3, 0.5])
    actions = rng.choice(3, size=n, p=probs)
    rewards = rng.normal(size=n)
    est = ips(rewards, actions, probs[actions], np.tile(probs, (n, 1)))
    assert est.value == rewards.mean()
    assert est.ess == pytest.approx(n) and est.details["max_weight"] == 1.0
    assert est.ci_low < est.value < est.ci_high and est.estimator == "ips" and est.n == n
    assert snips(rewards, actions, probs[actions], np.tile(probs, (n, 1))).value == pytest.approx(rewards.mean())


def test_ips_and_dr_expectations_are_exact_on_a_deterministic_two_armed_bandit():
    means, behaviour, target = np.array([1.0, 3.0]), np.array([0.25, 0.75]), np.array([0.6, 0.4])
    truth = float(target @ means)  # 1.8
    q_wrong = np.array([[0.0, 10.0]])
    # E over one logged decision: enumerate both actions weighted by their behaviour probability.
    e_ips = sum(behaviour[a] * ips([means[a]], [a], [behaviour[a]], [target]).value for a in (0, 1))
    e_dr = sum(behaviour[a] * doubly_robust([means[a]], [a], [behaviour[a]], [target], q_hat=q_wrong).value
               for a in (0, 1))
    assert e_ips == pytest.approx(truth, abs=1e-12) and e_dr == pytest.approx(truth, abs=1e-12)
    # A log whose action counts match the behaviour probabilities exactly gives the truth exactly.
    actions = np.array([0] * 100 + [1] * 300)
    args = (means[actions], actions, behaviour[actions], np.tile(target, (400, 1)))
    assert ips(*args).value == pytest.approx(truth, abs=1e-12)
    assert doubly_robust(*args, q_hat=np.tile(q_wrong, (400, 1))).value == pytest.approx(truth, abs=1e-12)
    assert ips(*args).value != pytest.approx(float(behaviour @ means))  # the behaviour value is different


def test_dr_with_a_perfect_reward_model_equals_dm_and_beats_ips_variance():
    logged, _, q, _, _ = linear_bandit(2000, seed=1, noise=0.0)
    dm = direct_method(**logged, q_hat=q)
    dr = doubly_robust(**logged, q_hat=q)
    ip = ips(**logged)
    assert dr.value == pytest.approx(dm.value, abs=1e-12)
    assert dr.details["std_error"] < 0.5 * ip.details["std_error"]
    assert dr.ess == pytest.approx(ip.ess) and dm.ess == 2000


def test_dr_varies_less_than_ips_across_datasets():
    values = {"ips": [], "dr": []}
    for seed in range(30):
        logged, _, q, _, _ = linear_bandit(300, seed=seed, noise=0.3)
        values["ips"].append(ips(**logged).value)
        values["dr"].append(doubly_robust(**logged, q_hat=q).value)
    assert np.var(values["dr"]) < 0.5 * np.var(values["ips"])


def test_snips_is_invariant_to_scaling_the_weights():
    logged, *_ = linear_bandit(400, seed=2)
    halved = {**logged, "propensities": logged["propensities"] * 0.5}  # every weight doubles
    assert snips(**halved).value == pytest.approx(snips(**logged).value, rel=1e-12)
    assert snips(**halved).ci_high == pytest.approx(snips(**logged).ci_high, rel=1e-12)
    assert ips(**halved).value == pytest.approx(2 * ips(**logged).value, rel=1e-12)


def test_intervals_cover_the_truth_in_most_simulated_datasets():
    covered = {"dr": 0, "ips": 0, "snips": 0}
    for seed in range(100):
        logged, x, _, _, truth = linear_bandit(400, seed=100 + seed)
        for name, est in (("dr", doubly_robust(**logged, contexts=x, seed=seed)), ("ips", ips(**logged)),
                          ("snips", snips(**logged))):
            covered[name] += est.ci_low <= truth <= est.ci_high
    assert min(covered.values()) >= 85, covered


def test_reward_model_recovers_a_linear_model_and_cross_fits():
    logged, x, q, _, _ = linear_bandit(3000, seed=3, noise=0.0)
    q_in, info = fit_reward_model(x, logged["actions"], logged["rewards"], 3, l2=1e-6)
    assert np.abs(q_in - q).max() < 1e-4 and info["folds"] == 1
    q_cf, info = fit_reward_model(x, logged["actions"], logged["rewards"], 3, l2=1e-6, folds=2, seed=0)
    assert np.abs(q_cf - q).max() < 1e-4 and info["folds"] == 2 and info["empty_action_fits"] == 0
    poked = logged["rewards"].copy()
    poked[0] += 100.0  # out-of-fold: row 0's own reward never enters its own prediction
    assert fit_reward_model(x, logged["actions"], poked, 3, folds=2, seed=0)[0][0] == pytest.approx(
        fit_reward_model(x, logged["actions"], logged["rewards"], 3, folds=2, seed=0)[0][0], abs=1e-9)
    a0 = logged["actions"][0]
    assert fit_reward_model(x, logged["actions"], poked, 3)[0][0, a0] > q[0, a0] + 0.01  # in-sample: it does
    only_zero = np.zeros(20, dtype=int)  # action 1 never logged: predicted by the mean reward
    q_fb, info = fit_reward_model(x[:20], only_zero, np.arange(20.0), 2)
    assert info["empty_action_fits"] == 1 and np.all(q_fb[:, 1] == 9.5)


def test_evaluate_bandit_returns_all_four_and_clipping_is_reported():
    logged, x, _, behaviour, truth = linear_bandit(1000, seed=4)
    res = evaluate_bandit(**logged, contexts=x, behavior_probs=behaviour)
    assert set(res) == {"ips", "snips", "dm", "dr"}
    assert res["dr"].value == doubly_robust(**logged, contexts=x).value
    for est in res.values():
        assert abs(est.value - truth) < 0.15
        json.dumps(est.to_dict())
    clipped = ips(**logged, clip=2.0)
    assert clipped.details["clipped"] > 0 and clipped.details["max_weight"] > 2.0


# ----- episodic estimators -----------------------------------------------------------------------

def test_pdwis_with_target_equal_to_behaviour_is_the_average_discounted_return():
    rng = np.random.default_rng(0)
    episodes, returns = [], []
    for length in (3, 7, 1, 5, 7):
        r, p = rng.normal(size=length), rng.uniform(0.2, 1.0, size=length)
        episodes.append(Episode(r, p, p))
        returns.append(np.sum(0.9 ** np.arange(length) * r))
    est = per_decision_wis(episodes, gamma=0.9, n_bootstrap=200)
    assert est.value == pytest.approx(np.mean(returns), abs=1e-12)
    assert est.ess == pytest.approx(5) and est.n == 5 and est.ci_low <= est.value <= est.ci_high


def test_pdwis_matches_a_hand_computation_and_accepts_dicts():
    episodes = [{"rewards": [1.0, 1.0], "propensities": [0.5, 0.5], "target_action_probs": [1.0, 0.5]},
                {"rewards": [0.0], "propensities": [0.5], "target_action_probs": [0.25]}]
    # t=0: weights 2, 0.5 -> (2*1 + 0.5*0) / 2.5; t=1: weights 2 (ep 1), 0.5 (ep 2 ended, keeps its weight)
    expected = 2.0 / 2.5 + 0.5 * (2.0 * 1.0) / 2.5
    est = per_decision_wis(episodes, gamma=0.5, n_bootstrap=50)
    assert est.value == pytest.approx(expected, abs=1e-12)
    again = per_decision_wis(episodes, gamma=0.5, n_bootstrap=50)
    assert (again.ci_low, again.ci_high) == (est.ci_low, est.ci_high)  # seeded bootstrap


def two_state_mdp(n=3000, seed=0):
    """Action a moves to state a; reward 1 in state 1; target pi(1|s) = 0.8; V(0) = 7.2, V(1) = 8.2 at gamma 0.9."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 2, n)
    a = rng.integers(0, 2, n)
    eye = np.eye(2)
    pi = np.tile([0.2, 0.8], (n, 1))
    return dict(obs=eye[s], actions=a, rewards=(s == 1).astype(float), next_obs=eye[a], dones=np.zeros(n),
                target_probs_next=pi, initial_obs=eye[[0]], initial_target_probs=pi[:1])


def test_fqe_recovers_the_value_of_a_two_state_mdp():
    cfg = FQEConfig(hidden=(16,), iterations=100, steps_per_iteration=3, batch_size=256, lr=1e-2)
    est = fitted_q_evaluation(**two_state_mdp(), gamma=0.9, config=cfg)
    assert est.value == pytest.approx(7.2, abs=0.1)
    assert est.estimator == "fqe" and est.n == 1 and est.details["transitions"] == 3000
    again = fitted_q_evaluation(**two_state_mdp(), gamma=0.9, config=cfg)
    assert again.value == est.value  # deterministic given the seed
    data = {**two_state_mdp(), "initial_obs": np.eye(2)[[1]]}
    assert fitted_q_evaluation(**data, gamma=0.9, config=cfg).value == pytest.approx(8.2, abs=0.1)


def test_fqe_respects_terminations():
    data = {**two_state_mdp(), "dones": np.ones(3000)}  # every step ends the episode: V(s) = r(s)
    cfg = FQEConfig(hidden=(16,), iterations=30, steps_per_iteration=5, batch_size=256, lr=1e-2)
    assert fitted_q_evaluation(**data, gamma=0.9, config=cfg).value == pytest.approx(0.0, abs=0.05)


def chain_episodes(n, seed=0):
    """Two-step episodes: step 0 in state 0, step 1 in state 1, then termination; reward = action."""
    rng = np.random.default_rng(seed)
    eps, pi = [], np.array([0.3, 0.7])
    for _ in range(n):
        a = rng.integers(0, 2, 2)
        eps.append(Episode(rewards=a.astype(float), propensities=[0.5, 0.5], target_action_probs=pi[a],
                           obs=np.eye(3), actions=a, target_probs=np.tile(pi, (3, 1)), terminated=True))
    return eps


def test_evaluate_episodic_runs_pdwis_and_fqe_on_the_same_episodes():
    eps = chain_episodes(400)
    cfg = FQEConfig(hidden=(16,), iterations=60, steps_per_iteration=5, batch_size=256, lr=3e-3,
                    bootstrap_refits=3)
    res = evaluate_episodic(eps, gamma=0.9, n_bootstrap=200, fqe_config=cfg)
    truth = 0.7 + 0.9 * 0.7
    assert res["pdwis"].value == pytest.approx(truth, abs=0.1)
    assert res["fqe"].value == pytest.approx(truth, abs=0.1)
    assert len(res["fqe"].details["refit_values"]) == 3 and "refits" in res["fqe"].details["ci_method"]
    assert res["fqe"].ci_low < res["fqe"].value < res["fqe"].ci_high


# ----- refusals ----------------------------------------------------------------------------------

def bandit_args(**changes):
    n = 5
    base = dict(rewards=np.ones(n), actions=np.array([0, 1, 0, 1, 0]), propensities=np.full(n, 0.5),
                target_probs=np.tile([0.5, 0.5], (n, 1)))
    return {**base, **changes}


@pytest.mark.parametrize("estimator", [ips, snips, doubly_robust])
@pytest.mark.parametrize(("changes", "match"), [
    (dict(propensities=[0.5, np.nan, 0.5, np.nan, 0.5]), r"2 of 5 rows have missing propensities"),
    (dict(propensities=[0.5, None, 0.5, 0.5, 0.5]), r"1 of 5 rows have missing propensities"),
    (dict(propensities=[0.5, 0.0, 1.5, -0.1, 0.5]), r"3 of 5 rows have propensities outside \(0, 1\]"),
    (dict(target_probs=[[0.5, 0.5]] * 3 + [[0.5, 0.4]] * 2), r"2 of 5 rows have target_probs that do not sum to 1"),
    (dict(target_probs=[[0.5, 0.5]] * 4 + [[1.2, -0.2]]), r"1 of 5 rows have negative target_probs"),
    (dict(target_probs=[[0.5, 0.5]] * 4 + [[np.nan, 1.0]]), r"1 of 5 rows have missing target_probs"),
    (dict(propensities=[0.5, 0.5, 0.5, 0.5, 1.0], behavior_probs=[[0.5, 0.5]] * 4 + [[1.0, 0.0]]),
     r"1 of 5 rows violate support"),
    (dict(behavior_probs=[[0.25, 0.75]] * 5), r"5 of 5 rows have propensities that differ from behavior_probs"),
    (dict(rewards=np.ones(4)), r"mismatched lengths: \{'rewards': 4, 'actions': 5"),
    (dict(actions=np.array([0, 1, 2, 1, 0])), r"1 of 5 rows have actions that are not integers in \[0, 2\)"),
    (dict(rewards=[1.0, np.nan, 1.0, 1.0, 1.0]), r"1 of 5 rows have non-finite rewards"),
    (dict(rewards=[], actions=[], propensities=[], target_probs=np.zeros((0, 2))), r"n == 0"),
])
def test_bandit_estimators_refuse_bad_logs(estimator, changes, match):
    args = bandit_args(**changes)
    if estimator is doubly_robust:
        args["q_hat"] = np.zeros((len(args["target_probs"]), 2))
    with pytest.raises(OPEError, match=match) as info:
        estimator(**args)
    assert isinstance(info.value, RLOpsError)


def test_support_violation_where_the_logged_action_is_fine():
    # Logged actions are supported, but the target also likes action 2 which the behaviour never takes.
    args = bandit_args(target_probs=np.tile([0.4, 0.4, 0.2], (5, 1)),
                       behavior_probs=np.tile([0.5, 0.5, 0.0], (5, 1)))
    with pytest.raises(OPEError, match=r"5 of 5 rows violate support"):
        evaluate_bandit(**args, q_hat=np.zeros((5, 3)))


def test_model_based_estimators_need_a_model_and_snips_needs_weight():
    with pytest.raises(OPEError, match="need q_hat .* or contexts"):
        direct_method(**bandit_args())
    with pytest.raises(OPEError, match=r"mismatched lengths: \{'contexts': 4"):
        doubly_robust(**bandit_args(), contexts=np.zeros((4, 2)))
    with pytest.raises(OPEError, match=r"q_hat must have shape \(5, 2\)"):
        doubly_robust(**bandit_args(), q_hat=np.zeros((5, 3)))
    with pytest.raises(OPEError, match="5 of 5 rows have importance weight 0"):
        snips(**bandit_args(target_probs=np.tile([0.0, 0.0, 1.0], (5, 1))))
    with pytest.raises(OPEError, match=r"confidence must be in \(0, 1\)"):
        ips(**bandit_args(), confidence=95)
    with pytest.raises(OPEError, match="clip must be > 0"):
        ips(**bandit_args(), clip=0)


@pytest.mark.parametrize(("episodes", "match"), [
    ([], r"no episodes to evaluate: n == 0"),
    ([Episode([1.0, 1.0], [0.5, np.nan], [0.5, 0.5])], r"1 of 2 steps have missing propensities"),
    ([Episode([1.0], [0.0], [0.5]), Episode([1.0], [2.0], [0.5])], r"2 of 2 steps have propensities outside"),
    ([Episode([1.0, 1.0], [0.5], [0.5, 0.5])], r"1 of 1 episodes have mismatched lengths"),
    ([Episode([], [], [])], r"1 of 1 episodes have no steps"),
    ([Episode([1.0], [0.5], [None])], r"1 of 1 steps have target_action_probs missing"),
    ([{"rewards": [1.0], "propensities": [0.5], "target_action_probs": [0.5], "reward": 1}], r"unknown keys"),
])
def test_pdwis_refuses_bad_episodes(episodes, match):
    with pytest.raises(OPEError, match=match):
        per_decision_wis(episodes, gamma=0.9)


def test_fqe_refuses_bad_transitions():
    data = two_state_mdp(10)
    with pytest.raises(OPEError, match=r"mismatched lengths: \{'obs': 10, 'actions': 9"):
        fitted_q_evaluation(**{**data, "actions": data["actions"][:9]}, gamma=0.9)
    bad = data["target_probs_next"].copy()
    bad[:3] = [0.6, 0.6]
    with pytest.raises(OPEError, match=r"3 of 10 rows have target_probs_next that do not sum to 1"):
        fitted_q_evaluation(**{**data, "target_probs_next": bad}, gamma=0.9)
    with pytest.raises(OPEError, match=r"n == 0"):
        fitted_q_evaluation(**{k: v[:0] for k, v in data.items()}, gamma=0.9)
    with pytest.raises(OPEError, match=r"gamma in \[0, 1\)"):
        fitted_q_evaluation(**data, gamma=1.0)
    with pytest.raises(OPEError, match=r"2 of 10 rows have dones not 0/1"):
        fitted_q_evaluation(**{**data, "dones": np.r_[np.zeros(8), 0.5, 2.0]}, gamma=0.9)
    with pytest.raises(OPEError, match="bootstrap_refits needs episode_ids"):
        fitted_q_evaluation(**data, gamma=0.9, config=FQEConfig(iterations=1, bootstrap_refits=2))


def test_episodes_for_fqe_must_carry_observations_that_agree():
    eps = chain_episodes(3)
    with pytest.raises(OPEError, match=r"1 of 4 episodes lack obs, actions or target_probs"):
        episodes_to_transitions([*eps, Episode([1.0], [0.5], [0.5])])
    wrong = Episode(eps[0].rewards, eps[0].propensities, [0.123, 0.123], eps[0].obs, eps[0].actions,
                    eps[0].target_probs)
    with pytest.raises(OPEError, match=r"2 of 8 steps have target_action_probs that differ from target_probs"):
        episodes_to_transitions([*eps, wrong])
    short = Episode(eps[0].rewards, eps[0].propensities, eps[0].target_action_probs, eps[0].obs[:2], eps[0].actions,
                    eps[0].target_probs)
    with pytest.raises(OPEError, match=r"1 of 1 episodes need obs and target_probs with T \+ 1 rows"):
        episodes_to_transitions([short])
