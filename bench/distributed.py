"""Data-parallel training benchmark: 1 process vs N processes under torchrun, same effective batch.

1. A CartPole behaviour policy (the heuristic distilled by behaviour cloning, then served with epsilon = 0.3 through
   the real decision engine) logs ``--episodes`` episodes; ``build_transitions`` turns them into a dataset.
2. For each trainer (``bc``, ``cql``) and each process count, the trainer runs ``--steps`` gradient steps with
   ``--batch-size`` rows per step in total (``ceil(batch / N)`` per rank, gradients averaged): 1 process as a plain
   process, N > 1 under ``python -m torch.distributed.run --standalone --nproc_per_node N`` (gloo).
3. Reported per run: samples/s (``steps * batch / training seconds``, process-group start excluded) and
   time-to-target: seconds and steps until the training loss (recorded every 25 steps, averaged over ranks, a
   moving mean of 4 records) first falls to the target, which is the 1-process run's final smoothed loss plus 5% of
   the drop from its first record (so 1 process reaches it near its end, by construction).

On a GPU machine the same runs are made (the trainers keep their small networks on CPU tensors; the process group
adds NCCL for CUDA tensors), so the GPU row says so rather than measuring the GPU. Prints JSON.
``python bench/distributed.py [--nproc 2] [--steps 3000] [--batch-size 256] [--episodes 60]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

REPORT_EVERY = 25
SMOOTH = 4


def build_dataset(directory: Path, episodes: int) -> Path:
    """Log ``episodes`` epsilon-soft episodes of the distilled heuristic and save them as transitions."""
    from rlops_plugin.experience.dataset import build_transitions
    from rlops_plugin.experience.feedback import parse_feedback
    from rlops_plugin.experience.store import open_store
    from rlops_plugin.flavor.model import LoadedModel
    from rlops_plugin.serving.engine import DecisionEngine
    from rlops_plugin.serving.exploration import ExplorationConfig
    from rlops_plugin.serving.requests import DecisionRequest
    from rlops_plugin.training.expert import distill_cartpole_heuristic

    bundle = distill_cartpole_heuristic(episodes=30, max_steps=300, hidden_sizes=[64, 64], bc_steps=600, lr=3e-3)
    engine = DecisionEngine("bench", LoadedModel(bundle, "bench"), exploration=ExplorationConfig("epsilon", 0.3),
                            seed=0)
    env = bundle.env_spec.make()
    with open_store(directory / "store.db") as store:
        for episode in range(episodes):
            obs, _ = env.reset(seed=episode)
            for step in range(500):
                d = engine.decide(DecisionRequest(obs=np.asarray([obs], np.float32), episode_ids=[f"ep{episode}"],
                                                  steps=[step]))
                store.log_decisions(d.batch)
                next_obs, reward, terminated, truncated, _ = env.step(int(d.batch.actions[0]))
                payload = {"terminated": terminated, "truncated": truncated and not terminated}
                if terminated:
                    payload["next_obs"] = next_obs.tolist()
                store.add_feedback([parse_feedback({"decision_id": d.decision_ids[0], "value": float(reward),
                                                    "payload": payload})])
                obs = next_obs
                if terminated or truncated:
                    break
        data = build_transitions(store, "bench", bundle)
    from rlops_plugin import flavor

    flavor.save_model(bundle, directory / "init")
    return data.save(directory / "dataset")


def worker(args: argparse.Namespace) -> None:
    """One rank's training run; rank 0 writes the timings and the loss history as JSON to ``args.out``."""
    import torch

    from rlops_plugin import plugins
    from rlops_plugin.experience.dataset import Dataset
    from rlops_plugin.flavor.model import load_model
    from rlops_plugin.training import distributed
    from rlops_plugin.training.base import make_config

    torch.set_num_threads(1)
    dist = distributed.init()  # process-group start is not training time
    trainer_cls = plugins.trainers().get(args.trainer).value
    trainer_cls.report_every = REPORT_EVERY
    config = make_config(trainer_cls.Config, {"steps": args.steps, "batch_size": args.batch_size})
    init, data = load_model(args.init), Dataset.load(args.dataset)
    stamps: list[tuple[int, float, float]] = []
    distributed.barrier()
    start = time.perf_counter()
    trainer_cls().train(init, data, config, lambda step, total, m: stamps.append(
        (step, time.perf_counter() - start, m["train/loss"])))
    elapsed = time.perf_counter() - start
    if dist.rank == 0:
        Path(args.out).write_text(json.dumps({"seconds": elapsed, "history": stamps, "rows": len(data)}))


def run(trainer: str, nproc: int, init: Path, dataset: Path, steps: int, batch: int) -> dict:
    """Train once with ``nproc`` processes; the rank-0 record."""
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    me = [str(Path(__file__).resolve()), "--worker", "--trainer", trainer, "--init", str(init), "--dataset",
          str(dataset), "--steps", str(steps), "--batch-size", str(batch), "--out", str(out)]
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *launcher, *me], check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def smoothed(history: list) -> list[tuple[int, float, float]]:
    """Moving mean of the last ``SMOOTH`` recorded losses, with each record's step and time."""
    losses = [h[2] for h in history]
    return [(h[0], h[1], float(np.mean(losses[max(0, i - SMOOTH + 1):i + 1]))) for i, h in enumerate(history)]


def time_to(history: list, target: float) -> dict:
    """First step and time at which the smoothed loss is at or below ``target`` (None if never)."""
    for step, seconds, loss in smoothed(history):
        if loss <= target:
            return {"steps": step, "seconds": round(seconds, 3)}
    return {"steps": None, "seconds": None}


def main() -> None:
    """Parse the options, build the data, run 1 and N processes per trainer, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--trainers", default="bc,cql")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trainer", help=argparse.SUPPRESS)
    parser.add_argument("--init", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    root = Path(tempfile.mkdtemp(prefix="rlops-bench-distributed-"))
    dataset = build_dataset(root, args.episodes)
    results: dict = {"machine": machine(), "steps": args.steps, "batch_size": args.batch_size,
                     "report_every": REPORT_EVERY, "smooth_records": SMOOTH, "trainers": {}}
    for trainer in args.trainers.split(","):
        runs = {n: run(trainer, n, root / "init", dataset, args.steps, args.batch_size) for n in (1, args.nproc)}
        base = smoothed(runs[1]["history"])
        target = base[-1][2] + 0.05 * (base[0][2] - base[-1][2])
        rows = {}
        for n, r in runs.items():
            rows[f"{n}_proc"] = {"train_seconds": round(r["seconds"], 3),
                                 "samples_per_s": round(args.steps * args.batch_size / r["seconds"], 1),
                                 "final_smoothed_loss": round(smoothed(r["history"])[-1][2], 5),
                                 "time_to_target": time_to(r["history"], target)}
        rows["target_loss"] = round(target, 5)
        rows["rows"] = runs[1]["rows"]
        rows["speedup_samples_per_s"] = round(rows[f"{args.nproc}_proc"]["samples_per_s"]
                                              / rows["1_proc"]["samples_per_s"], 3)
        if trainer == "cql":
            rows["note"] = ("CQL's loss (TD + conservative penalty) is not monotone: it moves with the Q-values, so "
                            "its time-to-target says little; BC's is the meaningful one")
        results["trainers"][trainer] = rows
    results["gpu"] = ({"note": f"CUDA present ({torch.cuda.get_device_name(0)}), but the vector trainers keep their "
                                "small networks on CPU tensors: the runs above are the measurement"}
                      if torch.cuda.is_available() else {"skipped": "no CUDA device on this machine"})
    emit(results)


if __name__ == "__main__":
    main()
