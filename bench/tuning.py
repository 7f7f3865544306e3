"""Tuning benchmark: Optuna TPE vs random search through ``rlops_plugin.lifecycle.tune``, same space and budget.

The problem: behaviour cloning from an untrained CartPole policy (return ~10) on 8 episodes of
heuristic-labelled states, with only 20 gradient steps, so the learning rate and the batch size decide
how far it gets (measured: lr 0.01-0.1 at batch >= 128 reaches 440-500; lr >= 0.3 or small batches stay
under ~200). The space searches ``lr`` (log 1e-4..1) and ``batch_size`` (int, log 8..512); the default
configuration (lr 1e-3, batch 256) runs first in both studies, as ``tune`` always does.

For each seed both samplers get the same budget. Reported per sampler: trials until a trial reached 95%
of the best return any run found (the default counts as trial 1; ``budget + 1`` when never reached),
the fraction of runs that reached it, and the best return after the budget. Every trial is a real
training run logged to an MLflow sqlite store in a temporary folder.

Prints JSON. ``python bench/tuning.py [--trials 20] [--seeds 8] [--eval-episodes 10]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

from rlops_plugin import EnvSpec, PolicyBundle  # noqa: E402
from rlops_plugin.training.expert import heuristic_transitions  # noqa: E402

SPACE = {"trainer": "bc", "objective": {"metric": "eval/return_mean", "direction": "maximize"},
         "fixed": {"steps": 20},
         "parameters": {"lr": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True},
                        "batch_size": {"type": "int", "low": 8, "high": 512, "log": True}}}


def trials_to(values: list[float | None], target: float) -> int:
    """1-based index of the first trial reaching ``target`` (``len + 1`` if none did)."""
    for i, value in enumerate(values, start=1):
        if value is not None and value >= target:
            return i
    return len(values) + 1


def main() -> None:
    """Run both samplers over the seeds and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--eval-episodes", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    from rlops_plugin.lifecycle import tune

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        for sampler in ("tpe", "random"):  # artifacts in the temporary folder too, not ./mlruns
            mlflow.create_experiment(f"bench-tuning-{sampler}", artifact_location=(Path(tmp) / sampler).as_uri())
        init = PolicyBundle.create(EnvSpec(id="CartPole-v1"), config={"hidden_sizes": [32, 32]}, seed=1)
        data_dir = str(heuristic_transitions(init).save(Path(tmp) / "dataset"))
        runs: dict[str, list[dict]] = {"tpe": [], "random": []}
        started = time.perf_counter()
        for seed in range(args.seeds):
            for sampler in runs:
                t0 = time.perf_counter()
                result = tune(SPACE, init, data_dir, n_trials=args.trials, seed=seed, sampler=sampler,
                              eval_episodes=args.eval_episodes, experiment=f"bench-tuning-{sampler}")
                runs[sampler].append({"seed": seed, "values": [t.value for t in result.trials],
                                      "best": result.best_value, "default": result.default_value,
                                      "best_params": result.best_params,
                                      "seconds": round(time.perf_counter() - t0, 1)})
        total_s = time.perf_counter() - started
    best_found = max(r["best"] for rs in runs.values() for r in rs)
    target = 0.95 * best_found
    summary = {}
    for sampler, rs in runs.items():
        counts = [trials_to(r["values"], target) for r in rs]
        summary[sampler] = {
            "trials_to_95pct_median": statistics.median(counts),
            "trials_to_95pct_mean": round(statistics.mean(counts), 2),
            "trials_to_95pct_each": counts,
            "reached_within_budget": sum(c <= args.trials for c in counts) / len(counts),
            "best_return_mean": round(statistics.mean(r["best"] for r in rs), 1),
            "best_return_min": min(r["best"] for r in rs),
            "never_worse_than_default": all(r["best"] >= r["default"] for r in rs),
            "seconds_per_study_median": statistics.median(r["seconds"] for r in rs)}
    emit({"benchmark": "tuning", "trainer": "bc", "space": SPACE, "budget_trials": args.trials,
          "seeds": args.seeds, "eval_episodes": args.eval_episodes, "default_return": runs["tpe"][0]["default"],
          "best_return_found": best_found, "target_95pct": round(target, 1), "samplers": summary,
          "total_seconds": round(total_s, 1), "machine": machine(),
          "runs": {s: [{k: v for k, v in r.items() if k != "values"} for r in rs] for s, rs in runs.items()}})


if __name__ == "__main__":
    main()
