"""Offline learning benchmark: our CQL vs d3rlpy's DiscreteCQL on the same logged CartPole data.

1. A heuristic CartPole controller is distilled into an rlops policy (behaviour cloning) and
   served by ``rlops serve`` with epsilon = 0.5 exploration: a deliberately mediocre,
   epsilon-soft behaviour policy (mean return ~140).
2. 100k decisions are logged through the real serving path (HTTP, durable store, rewards posted
   to the feedback endpoint) and turned into transitions with ``build_transitions``.
3. Our ``cql`` trainer learns offline from them, warm-started from the deployed policy, and is
   evaluated greedily over 20 fixed-seed episodes.
4. d3rlpy's DiscreteCQL (in its own virtualenv: it pins gymnasium 1.0) trains on the same
   transitions with the same number of gradient steps and batch size, evaluated the same way.
5. DPO: 5k synthetic preference pairs preferring the heuristic (optimal) action on logged
   states; we report how often the updated policy picks the preferred action on held-out states.

Prints JSON. ``python bench/learning.py [--steps 5000] [--decisions 100000] [--d3rlpy-venv DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

from rlops_plugin import EnvSpec, PolicyBundle, flavor  # noqa: E402
from rlops_plugin.experience.dataset import Dataset, build_transitions  # noqa: E402
from rlops_plugin.experience.store import open_store  # noqa: E402
from rlops_plugin.serving.process import PolicyServerProcess  # noqa: E402
from rlops_plugin.simulation.rollouts import rollout  # noqa: E402
from rlops_plugin.simulation.traffic import DecisionClient, simulate  # noqa: E402
from rlops_plugin.training.cql import CQLConfig, CQLTrainer  # noqa: E402
from rlops_plugin.training.dpo import DPOConfig, DPOTrainer  # noqa: E402
from rlops_plugin.training.expert import cartpole_heuristic, distill_cartpole_heuristic  # noqa: E402

EVAL_SEEDS = list(range(50_000, 50_020))
CARTPOLE = EnvSpec(id="CartPole-v1")


def distilled_expert(seed: int = 0) -> PolicyBundle:
    """Behaviour-clone the heuristic on states it visits (with some noise for coverage)."""
    return distill_cartpole_heuristic(episodes=60, max_steps=500, hidden_sizes=[64, 64], bc_steps=1500, seed=seed)


D3RLPY_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import numpy as np, gymnasium as gym, torch
    import d3rlpy
    torch.set_num_threads(1)
    data = np.load(sys.argv[1])
    steps, batch, seeds = int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
    dataset = d3rlpy.dataset.MDPDataset(observations=data["obs"], actions=data["action"].reshape(-1, 1),
                                        rewards=data["reward"], terminals=data["terminal"],
                                        timeouts=data["timeout"])
    cql = d3rlpy.algos.DiscreteCQLConfig(batch_size=batch).create(device="cpu:0")
    start = time.perf_counter()
    cql.fit(dataset, n_steps=steps, n_steps_per_epoch=steps, show_progress=False, save_interval=10**9)
    fit_s = time.perf_counter() - start
    env = gym.make("CartPole-v1")
    returns = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            action = int(cql.predict(np.asarray(obs, np.float32)[None])[0])
            obs, r, term, trunc, _ = env.step(action)
            total += r
            done = term or trunc
        returns.append(total)
    print(json.dumps({"fit_s": fit_s, "returns": returns, "version": d3rlpy.__version__}))
""")


def d3rlpy_python(venv: Path) -> Path | str:
    """A virtualenv with d3rlpy and torch 2.13.0 (created on first use); the reason when it fails."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "torch==2.13.0", "d3rlpy"], check=True,
                       capture_output=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return f"could not install d3rlpy: {getattr(exc, 'stderr', b'')[-500:]!r}"
    return python


def episodes_for_d3rlpy(data: Dataset, path: Path) -> None:
    """Write transitions as ordered episodes with terminal/timeout flags (d3rlpy's MDPDataset)."""
    c = data.columns
    order = np.lexsort((c["step"], c["episode_id"].astype(str)))
    episode = c["episode_id"].astype(str)[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = episode[1:] != episode[:-1]
    terminal = c["done"][order].astype(np.float32)
    timeout = (last & (terminal == 0)).astype(np.float32)
    np.savez(path, obs=c["obs"][order], action=c["action"][order], reward=c["reward"][order].astype(np.float32),
             terminal=terminal, timeout=timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=5000, help="gradient steps for both CQLs")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=5000, help="DPO preference pairs")
    parser.add_argument("--d3rlpy-venv", default=os.path.expanduser("~/.cache/rlops-bench/d3rlpy-venv"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rlops-bench-learning-"))
    result: dict = {"benchmark": "learning", "machine": machine(), "config": vars(args)}

    expert = distilled_expert()
    flavor.save_model(expert, work / "behaviour")
    server = PolicyServerProcess(str(work / "behaviour"), work / "server.log", store=str(work / "store.db"),
                                 extra_args=["--exploration", "epsilon", "--epsilon", "0.5", "--seed", "1"])
    server.start()
    try:
        traffic = simulate(DecisionClient(server.url), CARTPOLE, args.decisions, n_envs=32, seed=1)
    finally:
        server.stop()
    start = time.perf_counter()
    with open_store(work / "store.db") as store:
        data = build_transitions(store, "policy", expert)
    result["logging"] = {"decisions": traffic.decisions, "episodes": traffic.episodes,
                         "behaviour_mean_return": traffic.mean_return, "wall_s": traffic.elapsed_s,
                         "dataset_rows": len(data), "dataset_build_s": time.perf_counter() - start,
                         "excluded": data.manifest["excluded"]}
    print(f"logged {traffic.decisions} decisions, behaviour return {traffic.mean_return:.1f}", file=sys.stderr)

    start = time.perf_counter()
    trained = CQLTrainer().train(expert, data, CQLConfig(steps=args.steps, batch_size=args.batch_size))
    ours_s = time.perf_counter() - start
    ours = rollout(trained.policy, CARTPOLE, EVAL_SEEDS)
    result["rlops_cql"] = {"fit_s": ours_s, "greedy_return_mean": float(ours.returns.mean()),
                           "greedy_returns": ours.returns.tolist(), "final_metrics": trained.metrics}
    print(f"rlops cql: {ours.returns.mean():.1f} in {ours_s:.1f}s", file=sys.stderr)

    python = d3rlpy_python(Path(args.d3rlpy_venv))
    if isinstance(python, str):
        result["d3rlpy"] = {"available": False, "reason": python}
    else:
        episodes_for_d3rlpy(data, work / "episodes.npz")
        proc = subprocess.run([str(python), "-c", D3RLPY_SCRIPT, str(work / "episodes.npz"), str(args.steps),
                               str(args.batch_size), json.dumps(EVAL_SEEDS)], capture_output=True, text=True,
                              timeout=3600, cwd=work)  # d3rlpy writes d3rlpy_logs/ into its cwd
        if proc.returncode != 0:
            result["d3rlpy"] = {"available": False, "reason": proc.stderr[-800:]}
        else:
            peer = json.loads(proc.stdout.strip().splitlines()[-1])
            result["d3rlpy"] = {"available": True, "version": peer["version"], "fit_s": peer["fit_s"],
                                "greedy_return_mean": float(np.mean(peer["returns"])),
                                "greedy_returns": peer["returns"]}
            print(f"d3rlpy: {np.mean(peer['returns']):.1f} in {peer['fit_s']:.1f}s", file=sys.stderr)

    result["dpo"] = dpo_benchmark(data, args.pairs)
    peer = result["d3rlpy"]
    result["targets"] = {
        "rlops greedy return >= 475 over 20 episodes": result["rlops_cql"]["greedy_return_mean"] >= 475,
        "rlops fit wall time <= d3rlpy": (result["rlops_cql"]["fit_s"] <= peer["fit_s"])
        if peer.get("available") else None,
    }
    emit(result)


def dpo_benchmark(data: Dataset, pairs: int) -> dict:
    """DPO from synthetic pairs preferring the heuristic action; accuracy on held-out logged states."""
    rng = np.random.default_rng(7)
    obs = data.columns["obs"]
    idx = rng.permutation(len(obs))
    train_states, test_states = obs[idx[:pairs]], obs[idx[pairs:pairs + 5000]]
    preferred = cartpole_heuristic(train_states)
    prefs = Dataset("preferences", {"obs": train_states, "chosen": preferred, "rejected": 1 - preferred})
    init = PolicyBundle.create(CARTPOLE, config={"hidden_sizes": [64, 64]}, seed=3)
    before = float((init.policy.act(test_states, deterministic=True)[0] == cartpole_heuristic(test_states)).mean())
    start = time.perf_counter()
    trained = DPOTrainer().train(init, prefs, DPOConfig())
    fit_s = time.perf_counter() - start
    after = float((trained.policy.act(test_states, deterministic=True)[0] == cartpole_heuristic(test_states)).mean())
    return {"pairs": pairs, "held_out_states": len(test_states), "fit_s": fit_s,
            "preferred_action_rate_before": before, "preferred_action_rate_after": after,
            "greedy_return_after": float(rollout(trained.policy, CARTPOLE, EVAL_SEEDS).returns.mean())}


if __name__ == "__main__":
    main()
