"""OPE benchmark: rlops estimators against known truths, and Open Bandit Pipeline's DR side by side.

Three parts, one JSON document on stdout:

* ``bandit``: ``ContextualBanditEnv`` (4 arms, 5-d contexts, Bernoulli rewards). Behaviour: epsilon-greedy
  (epsilon 0.3) around a fixed, deliberately imperfect linear scorer; target: softmax of the true
  logits at temperature 0.5. The true target value is the mean of sum_a pi(a|x) E[r|x, a] over 2M
  fresh contexts (the env's exact reward model), cross-checked by on-policy Monte Carlo through the env.
  For each of ``--seeds`` seeds, ``--n`` logged decisions go through IPS, SNIPS, DM and DR
  (ridge reward model on the raw contexts, misspecified on purpose: the truth is a sigmoid).
* ``cartpole``: CartPole-v1 logs of the heuristic ``a = 1 if theta + 0.5 theta_dot > 0`` mixed with
  epsilon-uniform (behaviour epsilon 0.3, target epsilon 0.2), gamma 0.99; truth = on-policy Monte Carlo
  discounted return of the target. PDWIS and FQE on ``--cartpole-seeds`` independent log sets (FQE's
  interval adds the spread of ``--fqe-refits`` refits on resampled episodes).
* ``obp``: obp 0.5.7's ``DoublyRobust`` in a side venv (outside the repo) on the same bandit logs, with
  OBP's own cross-fitted logistic reward model, and with our reward model (must match ours exactly).

Usage: ``python bench/ope.py [--seeds 50] [--n 10000] [--obp-venv /tmp/obp-venv] [--no-obp]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import NormalDist
from typing import Any

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

from rlops_plugin.envs.bandit import ContextualBanditEnv  # noqa: E402
from rlops_plugin.evaluation.ope import (  # noqa: E402
    Episode,
    FQEConfig,
    OPEEstimate,
    evaluate_bandit,
    evaluate_episodic,
    fit_reward_model,
)
from rlops_plugin.training.expert import cartpole_heuristic  # noqa: E402

BANDIT = {"n_actions": 4, "context_dim": 5, "problem_seed": 0}
BEHAVIOUR_EPSILON, TARGET_TEMPERATURE, SCORER_NOISE = 0.3, 0.5, 1.0
CARTPOLE_GAMMA, CARTPOLE_EPS_BEHAVIOUR, CARTPOLE_EPS_TARGET = 0.99, 0.3, 0.2
OBP_RECIPE = ["torch==2.13.0", "matplotlib>=3.4.3", "mypy-extensions>=0.4.3", "numpy>=1.23.5", "pandas>=1.5.2",
              "pyyaml>=6.0", "seaborn>=0.10.1", "scikit-learn>=1.1.3", "scipy>=1.9.3", "tqdm>=4.62.2",
              "pyieoe>=0.1.1", "pingouin>=0.4.0"]


# ----- part 1: contextual bandit ------------------------------------------------------------------

def behaviour_probs(contexts: np.ndarray, scorer: np.ndarray) -> np.ndarray:
    """Epsilon-greedy around a fixed linear scorer."""
    k = scorer.shape[0]
    probs = np.full((len(contexts), k), BEHAVIOUR_EPSILON / k)
    probs[np.arange(len(contexts)), np.argmax(contexts @ scorer.T, axis=1)] += 1.0 - BEHAVIOUR_EPSILON
    return probs


def target_probs(contexts: np.ndarray, env: ContextualBanditEnv) -> np.ndarray:
    """Softmax of the true logits at temperature TARGET_TEMPERATURE."""
    logits = (np.asarray(contexts, dtype=np.float64) @ env.theta.T + env.bias) / TARGET_TEMPERATURE
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def run_policy(env: ContextualBanditEnv, n: int, seed: int, policy) -> dict[str, np.ndarray]:
    """n decisions through the env: reset, sample an action from ``policy(context)``, step."""
    rng = np.random.default_rng(seed + 1_000_003)
    contexts = np.empty((n, env.context_dim), dtype=np.float32)
    actions, rewards = np.empty(n, dtype=np.int64), np.empty(n)
    obs, _ = env.reset(seed=seed)
    for i in range(n):
        if i:
            obs, _ = env.reset()
        probs = policy(obs[None, :])[0]
        a = min(int(np.searchsorted(np.cumsum(probs), rng.random(), side="right")), len(probs) - 1)
        _, reward, *_ = env.step(a)
        contexts[i], actions[i], rewards[i] = obs, a, reward
    return {"contexts": contexts, "actions": actions, "rewards": rewards}


def bandit_truth(env: ContextualBanditEnv, mc_decisions: int) -> dict[str, float]:
    """Exact-model value over 2M fresh contexts and on-policy Monte Carlo through the env."""
    rng = np.random.default_rng(12345)
    parts = []
    for _ in range(20):
        x = rng.normal(size=(100_000, env.context_dim)) + env.context_shift
        parts.append(np.sum(target_probs(x, env) * env.expected_reward(x), axis=1))
    exact = np.concatenate(parts)
    mc = run_policy(env, mc_decisions, 999, lambda x: target_probs(x, env))["rewards"]
    return {"value": float(exact.mean()), "value_std_error": float(exact.std() / np.sqrt(exact.size)),
            "value_method": "mean over 2,000,000 fresh contexts of sum_a pi(a|x) * env.expected_reward(x)[a]",
            "on_policy_mc": float(mc.mean()), "on_policy_mc_std_error": float(mc.std() / np.sqrt(mc.size)),
            "on_policy_mc_decisions": mc_decisions}


def summarize(estimates: list[OPEEstimate], truth: float) -> dict[str, float]:
    """Error, coverage and ESS statistics of one estimator over seeds."""
    values = np.array([e.value for e in estimates])
    rel = np.abs(values - truth) / abs(truth)
    covered = [e.ci_low <= truth <= e.ci_high for e in estimates]
    return {"mean_abs_rel_error": float(rel.mean()), "median_abs_rel_error": float(np.median(rel)),
            "max_abs_rel_error": float(rel.max()), "bias": float(values.mean() - truth),
            "rmse": float(np.sqrt(np.mean((values - truth) ** 2))), "coverage": float(np.mean(covered)),
            "mean_ci_width": float(np.mean([e.ci_high - e.ci_low for e in estimates])),
            "mean_ess": float(np.mean([e.ess for e in estimates])), "seeds": len(estimates)}


def run_bandit(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], Path]:
    """Part 1; also writes the logs (and our cross-fitted q_hat) to an .npz for OBP."""
    env = ContextualBanditEnv(**BANDIT)
    scorer = env.theta + np.random.default_rng(7).normal(0.0, SCORER_NOISE, size=env.theta.shape)
    truth = bandit_truth(env, args.mc_decisions)
    start = time.perf_counter()
    results: dict[str, list[OPEEstimate]] = {"ips": [], "snips": [], "dm": [], "dr": []}
    arrays: dict[str, np.ndarray] = {}
    for seed in range(args.seeds):
        log = run_policy(env, args.n, seed, lambda x: behaviour_probs(x, scorer))
        bp, tp = behaviour_probs(log["contexts"], scorer), target_probs(log["contexts"], env)
        prop = bp[np.arange(args.n), log["actions"]]
        est = evaluate_bandit(log["rewards"], log["actions"], prop, tp, contexts=log["contexts"],
                              behavior_probs=bp, seed=seed)
        for name, e in est.items():
            results[name].append(e)
        q_cf = fit_reward_model(log["contexts"], log["actions"], log["rewards"], env.n_actions, folds=2, seed=seed)[0]
        arrays.update({f"{seed}_{k}": v for k, v in {**log, "pscore": prop, "target": tp, "q_hat": q_cf,
                                                        "ours_dr": np.array(est["dr"].value)}.items()})
    seconds = time.perf_counter() - start
    path = workdir / "bandit_logs.npz"
    np.savez(path, **arrays)
    summary = {name: summarize(ests, truth["value"]) for name, ests in results.items()}
    dr = summary["dr"]
    return {
        "setup": {**BANDIT, "reward_type": "bernoulli", "decisions_per_seed": args.n, "seeds": args.seeds,
                  "behaviour": f"epsilon-greedy (epsilon {BEHAVIOUR_EPSILON}) on theta + N(0, {SCORER_NOISE}) noise",
                  "target": f"softmax(true logits / {TARGET_TEMPERATURE})",
                  "reward_model": "per-action ridge (l2 1.0) on raw contexts; DM in-sample, DR 2-fold cross-fitted",
                  "confidence": 0.95},
        "truth": truth,
        "behaviour_value": float(np.mean([np.mean(arrays[f"{s}_rewards"]) for s in range(args.seeds)])),
        "estimators": summary,
        "per_seed_values": {name: [round(e.value, 6) for e in ests] for name, ests in results.items()},
        "targets": {
            "dr_mean_abs_rel_error_le_0.05": {"value": dr["mean_abs_rel_error"],
                                              "met": dr["mean_abs_rel_error"] <= 0.05},
            "dr_coverage_ge_0.90": {"value": dr["coverage"], "met": dr["coverage"] >= 0.90},
        },
        "seconds_logging_and_estimating": seconds,
    }, path


# ----- part 2: CartPole ---------------------------------------------------------------------------

def heuristic_probs(obs: np.ndarray, eps: float) -> np.ndarray:
    """Epsilon-soft version of the controller a = 1 if theta + 0.5 theta_dot > 0 else 0."""
    greedy = cartpole_heuristic(obs)
    probs = np.full((len(greedy), 2), eps / 2.0)
    probs[np.arange(len(obs)), greedy] += 1.0 - eps
    return probs


def cartpole_episodes(n: int, seed: int, eps_behaviour: float, eps_target: float) -> list[Episode]:
    """n CartPole-v1 episodes of the behaviour policy, with both policies' probabilities."""
    env = gym.make("CartPole-v1")
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        o, _ = env.reset(seed=seed * 100_000 + i)
        obs, actions, rewards, terminated = [o], [], [], False
        while True:
            a = int(rng.random() < heuristic_probs(o, eps_behaviour)[0, 1])
            o, r, terminated, truncated, _ = env.step(a)
            obs.append(o)
            actions.append(a)
            rewards.append(r)
            if terminated or truncated:
                break
        obs_arr, acts = np.asarray(obs, dtype=np.float64), np.asarray(actions)
        pb, pt = heuristic_probs(obs_arr, eps_behaviour), heuristic_probs(obs_arr, eps_target)
        steps = np.arange(acts.size)
        episodes.append(Episode(np.asarray(rewards), pb[steps, acts], pt[steps, acts], obs_arr, acts, pt,
                                bool(terminated)))
    env.close()
    return episodes


def discounted_returns(episodes: list[Episode], gamma: float) -> np.ndarray:
    return np.array([np.sum(gamma ** np.arange(len(e.rewards)) * e.rewards) for e in episodes])


def run_cartpole(args: argparse.Namespace) -> dict[str, Any]:
    """Part 2: PDWIS and FQE against the on-policy Monte Carlo value of the target."""
    start = time.perf_counter()
    truth_eps = cartpole_episodes(args.truth_episodes, 10_000, CARTPOLE_EPS_TARGET, CARTPOLE_EPS_TARGET)
    on_policy = discounted_returns(truth_eps, CARTPOLE_GAMMA)
    truncated = float(np.mean([not e.terminated for e in truth_eps]))
    truth = float(on_policy.mean())
    truth_seconds = time.perf_counter() - start
    runs, est, conditional = [], {"pdwis": [], "fqe": []}, []
    for seed in range(args.cartpole_seeds):
        logs = cartpole_episodes(args.cartpole_episodes, seed, CARTPOLE_EPS_BEHAVIOUR, CARTPOLE_EPS_TARGET)
        t0 = time.perf_counter()
        res = evaluate_episodic(logs, CARTPOLE_GAMMA, seed=seed,
                                fqe_config=FQEConfig(seed=seed, bootstrap_refits=args.fqe_refits))
        seconds = time.perf_counter() - t0
        for name, e in res.items():
            est[name].append(e)
        fqe = res["fqe"]
        half = NormalDist().inv_cdf(0.975) * fqe.details["initial_state_std_error"]
        conditional.append(OPEEstimate("fqe", fqe.value, fqe.value - half, fqe.value + half, 0.95, fqe.ess, fqe.n))
        runs.append({"seed": seed, "episodes": len(logs), "transitions": int(sum(len(e.rewards) for e in logs)),
                     "behaviour_value": float(discounted_returns(logs, CARTPOLE_GAMMA).mean()),
                     "estimate_seconds": seconds,
                     **{name: {"value": e.value, "ci": [e.ci_low, e.ci_high], "ess": e.ess,
                               "rel_error": (e.value - truth) / truth} for name, e in res.items()},
                     "fqe_conditional_ci": [conditional[-1].ci_low, conditional[-1].ci_high],
                     "fqe_refit_values": fqe.details.get("refit_values"),
                     "fqe_bellman_rmse": fqe.details["bellman_rmse"]})
    return {
        "setup": {"env": "CartPole-v1 (500-step limit; truncation is not termination for FQE)",
                  "gamma": CARTPOLE_GAMMA, "behaviour": f"heuristic + epsilon {CARTPOLE_EPS_BEHAVIOUR}",
                  "target": f"heuristic + epsilon {CARTPOLE_EPS_TARGET}",
                  "logged_episodes_per_seed": args.cartpole_episodes, "seeds": args.cartpole_seeds,
                  "fqe": "default FQEConfig (MLP 64x64, 600 iterations x 3 Adam steps, batch 512)",
                  "fqe_ci": f"normal; initial-state variance + variance of {args.fqe_refits} refits on resampled "
                            "episodes (fqe_conditional: initial-state variance only)",
                  "pdwis_ci": "percentile bootstrap over episodes, 1000 resamples"},
        "truth": {"value": truth, "std_error": float(on_policy.std() / np.sqrt(on_policy.size)),
                  "episodes": args.truth_episodes, "method": "on-policy Monte Carlo discounted return",
                  "truncated_fraction": truncated,
                  "truncation_gap_bound": truncated * CARTPOLE_GAMMA**500 / (1 - CARTPOLE_GAMMA),
                  "truncation_note": "the Monte Carlo truth stops at the 500-step limit; FQE (truncation is not "
                                     "termination) estimates the untruncated value, higher by at most "
                                     "truncation_gap_bound",
                  "seconds": truth_seconds},
        "estimators": {**{name: summarize(e, truth) for name, e in est.items()},
                       "fqe_conditional": summarize(conditional, truth)},
        "runs": runs,
    }


# ----- part 3: Open Bandit Pipeline side by side --------------------------------------------------

OBP_SCRIPT = r'''
import json, sys, time
import numpy as np
from obp.ope import DoublyRobust, RegressionModel
from sklearn.linear_model import LogisticRegression
data = np.load(sys.argv[1])
seeds = sorted({int(k.split("_")[0]) for k in data.files})
out = {"obp_version": __import__("obp").__version__, "seeds": []}
t0 = time.perf_counter()
for s in seeds:
    g = lambda k: data[f"{s}_{k}"]
    ctx, act, rew, ps, pi = g("contexts"), g("actions"), g("rewards"), g("pscore"), g("target")[:, :, None]
    dr = DoublyRobust()
    q_own = RegressionModel(n_actions=pi.shape[1], base_model=LogisticRegression(), len_list=1).fit_predict(
        context=ctx, action=act, reward=rew, n_folds=2, random_state=s)
    kw = dict(reward=rew, action=act, pscore=ps, action_dist=pi)
    ci = dr.estimate_interval(**kw, estimated_rewards_by_reg_model=q_own, alpha=0.05, n_bootstrap_samples=1000,
                              random_state=s)
    ours_q = dr.estimate_policy_value(**kw, estimated_rewards_by_reg_model=g("q_hat")[:, :, None])
    out["seeds"].append({"seed": s, "dr_own_model": float(dr.estimate_policy_value(**kw,
                         estimated_rewards_by_reg_model=q_own)), "ci": [float(ci["95.0% CI (lower)"]),
                         float(ci["95.0% CI (upper)"])], "dr_with_our_q_hat": float(ours_q),
                         "ours_dr": float(g("ours_dr"))})
out["seconds"] = time.perf_counter() - t0
json.dump(out, open(sys.argv[2], "w"))
'''


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def ensure_obp_venv(venv: Path) -> dict[str, Any]:
    """Reuse or create the side venv; obp 0.5.7 declares Python <3.11 and pins torch 1.12, so it goes in
    with --no-deps --ignore-requires-python after its other requirements and the CPU torch."""
    python = venv / "bin" / "python"
    if python.exists() and _run([str(python), "-c", "import obp.ope"], 120).returncode == 0:
        return {"available": True, "python": str(python), "created": False}
    if venv.resolve().is_relative_to(Path(__file__).resolve().parents[1]):
        return {"available": False, "reason": f"{venv} is inside the repository; pass a path outside it"}
    start = time.perf_counter()
    steps = [[sys.executable, "-m", "venv", "--clear", str(venv)],
             [str(python), "-m", "pip", "install", "-q", *OBP_RECIPE],
             [str(python), "-m", "pip", "install", "-q", "--no-deps", "--ignore-requires-python", "obp==0.5.7"],
             [str(python), "-c", "import obp.ope"]]
    for cmd in steps:
        try:
            proc = _run(cmd, 1200)
        except (OSError, subprocess.TimeoutExpired) as err:
            return {"available": False, "reason": f"{' '.join(cmd[:5])}: {err}"}
        if proc.returncode != 0:
            tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if "ignored" not in ln][-5:]
            return {"available": False, "reason": f"{' '.join(cmd[:5])} failed: {' | '.join(tail)}"}
    return {"available": True, "python": str(python), "created": True,
            "install_seconds": time.perf_counter() - start}


def run_obp(args: argparse.Namespace, npz: Path, truth: float) -> dict[str, Any]:
    """Part 3: OBP's DoublyRobust on the same logs, in a subprocess of the side venv."""
    if args.no_obp:
        return {"available": False, "reason": "skipped (--no-obp)"}
    info = ensure_obp_venv(Path(args.obp_venv))
    if not info["available"]:
        return info
    script, out = npz.parent / "obp_dr.py", npz.parent / "obp_out.json"
    script.write_text(OBP_SCRIPT)
    try:
        proc = _run([info["python"], str(script), str(npz), str(out)], 1200)
    except subprocess.TimeoutExpired as err:
        return {**info, "available": False, "reason": f"OBP run timed out: {err}"}
    if proc.returncode != 0:
        return {**info, "available": False, "reason": f"OBP run failed: {proc.stderr.strip().splitlines()[-3:]}"}
    res = json.loads(out.read_text())
    rows = res["seeds"]
    own = np.array([r["dr_own_model"] for r in rows])
    rel = np.abs(own - truth) / abs(truth)
    return {**info, "obp_version": res["obp_version"], "seconds": res["seconds"],
            "estimator": "obp.ope.DoublyRobust with RegressionModel(LogisticRegression), 2-fold cross-fitting",
            "ci": "OBP estimate_interval: percentile bootstrap, 1000 resamples",
            "dr_own_model": {"mean_abs_rel_error": float(rel.mean()), "median_abs_rel_error": float(np.median(rel)),
                             "max_abs_rel_error": float(rel.max()), "bias": float(own.mean() - truth),
                             "coverage": float(np.mean([r["ci"][0] <= truth <= r["ci"][1] for r in rows])),
                             "mean_ci_width": float(np.mean([r["ci"][1] - r["ci"][0] for r in rows]))},
            "dr_with_our_q_hat_max_abs_diff_from_ours": float(max(abs(r["dr_with_our_q_hat"] - r["ours_dr"])
                                                                  for r in rows)),
            "per_seed_values": [round(r["dr_own_model"], 6) for r in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--n", type=int, default=10_000, help="logged decisions per bandit seed")
    parser.add_argument("--mc-decisions", type=int, default=200_000, help="on-policy bandit decisions (cross-check)")
    parser.add_argument("--cartpole-seeds", type=int, default=5)
    parser.add_argument("--cartpole-episodes", type=int, default=200, help="logged episodes per CartPole seed")
    parser.add_argument("--fqe-refits", type=int, default=4, help="FQE bootstrap refits per CartPole seed")
    parser.add_argument("--truth-episodes", type=int, default=1000, help="on-policy CartPole episodes for the truth")
    parser.add_argument("--obp-venv", default="/tmp/obp-venv", help="side venv for obp (outside the repo)")
    parser.add_argument("--no-obp", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlops-ope-bench-") as tmp:
        bandit, npz = run_bandit(args, Path(tmp))
        cartpole = run_cartpole(args)
        obp = run_obp(args, npz, bandit["truth"]["value"])
    if obp.get("available"):
        ours, theirs = bandit["estimators"]["dr"], obp["dr_own_model"]
        obp["side_by_side"] = {k: {"rlops_dr": ours[k], "obp_dr": theirs[k]}
                               for k in ("mean_abs_rel_error", "median_abs_rel_error", "coverage", "mean_ci_width")}
    emit({"benchmark": "ope", "machine": machine(), "bandit": bandit, "cartpole": cartpole, "obp": obp,
          "total_seconds": time.perf_counter() - start})


if __name__ == "__main__":
    main()
