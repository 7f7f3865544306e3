"""Canary benchmark: how fast and how often the promotion controller decides right.

200 simulated canaries of each kind — a worse (-10% mean reward), an equal and a better (+10%)
challenger — run through the same ``CanaryAnalysis`` state machine the controller uses
(shadow, then canary steps 5% / 25% / 50%, then promotion; rollback as soon as the always-valid
test shows the challenger worse). Per-decision rewards are Bernoulli with mean 0.5 for the
champion (the highest-variance case); the log is read every 100 decisions, as a controller polling
a busy deployment would. Reports the decisions needed to conclude and the wrong-decision rates.
Prints JSON. ``python bench/canary.py [--runs 200]``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

from rlops_plugin.deploy.analysis import FINAL, ROLLED_BACK, CanaryAnalysis, PromotionPolicy  # noqa: E402
from rlops_plugin.deploy.sequential import RewardStats  # noqa: E402

BASE = 0.5
KINDS = {"worse": 0.9, "equal": 1.0, "better": 1.1}


def one_canary(ratio: float, policy: PromotionPolicy, rng: np.random.Generator, poll_every: int,
               max_decisions: int) -> dict:
    """Run one canary to its end; return the verdict and how many decisions it took."""
    analysis = CanaryAnalysis(policy, started_at=0.0)
    challenger, champion = RewardStats(), RewardStats()
    total = shadow = canary_decisions = 0
    while analysis.state not in FINAL:
        n_chal = rng.binomial(poll_every, analysis.fraction)
        total += poll_every
        if analysis.state == "shadow":
            shadow += poll_every
        else:
            challenger.add((rng.random(n_chal) < BASE * ratio).astype(float))
            champion.add((rng.random(poll_every - n_chal) < BASE).astype(float))
            canary_decisions += n_chal
        now = total / max_decisions * policy.max_duration_s
        analysis.update(challenger, champion, now=now if total < max_decisions else policy.max_duration_s + 1,
                        shadow_seen=shadow)
    return {"state": analysis.state, "challenger_decisions": canary_decisions, "total_decisions": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--poll-every", type=int, default=100, help="decisions between looks at the log")
    parser.add_argument("--max-decisions", type=int, default=200_000, help="duration limit, in decisions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    policy = PromotionPolicy()
    rng = np.random.default_rng(args.seed)
    results = {}
    for kind, ratio in KINDS.items():
        runs = [one_canary(ratio, policy, rng, args.poll_every, args.max_decisions) for _ in range(args.runs)]
        states = Counter(r["state"] for r in runs)
        concluded = [r for r in runs if r["state"] in ("promoted", "rolled_back")]
        results[kind] = {
            "outcomes": dict(states),
            "median_challenger_decisions_to_conclude": float(np.median([r["challenger_decisions"] for r in concluded]))
            if concluded else None,
            "p95_challenger_decisions_to_conclude": float(np.percentile([r["challenger_decisions"] for r in concluded],
                                                                         95)) if concluded else None,
            "median_total_decisions_to_conclude": float(np.median([r["total_decisions"] for r in concluded]))
            if concluded else None,
            "rolled_back_within_2000_canary_decisions": float(np.mean(
                [r["state"] == ROLLED_BACK and r["challenger_decisions"] <= 2000 for r in runs])),
        }
    worse, equal, better = results["worse"], results["equal"], results["better"]
    emit({
        "benchmark": "canary", "machine": machine(), "runs_per_kind": args.runs, "policy": policy.to_dict(),
        "rewards": f"Bernoulli, champion mean {BASE}; worse x0.9, equal x1.0, better x1.1",
        "results": results,
        "wrong_decision_rates": {
            "worse_promoted": worse["outcomes"].get("promoted", 0) / args.runs,
            "equal_rolled_back": equal["outcomes"].get("rolled_back", 0) / args.runs,
            "better_rolled_back": better["outcomes"].get("rolled_back", 0) / args.runs,
        },
        "targets": {
            "worse rolled back within 2000 canary decisions in >= 95% of runs":
                worse["rolled_back_within_2000_canary_decisions"] >= 0.95,
            "false rollbacks of equal candidates <= 5%": equal["outcomes"].get("rolled_back", 0) / args.runs <= 0.05,
        },
    })


if __name__ == "__main__":
    main()
