"""Canary benchmark: how fast and how often the promotion controller decides right.

200 simulated canaries of each kind run through the same ``CanaryAnalysis`` state machine the
controller uses (shadow, then canary steps 5% / 25% / 50%, then promotion; rollback as soon as the
always-valid test shows the challenger worse); the log is read every 100 decisions, as a
controller polling a busy deployment would. Reports the decisions needed to conclude and the
wrong-decision rates.

* ``worse`` / ``equal`` / ``better``: Bernoulli per-decision rewards, champion mean 0.5 (the
  highest-variance case), challenger x0.9 / x1.0 / x1.1.
* Challengers with no evidence in their favour, which must never be promoted:
  ``constant_reward`` (every decision pays 1.0 on both sides, as CartPole's per-step reward does
  whatever the policy), ``zero_conversion`` (a challenger that never converts against a 0.1%
  champion) and ``huge_reward`` (the challenger's successes are reported as 1e308, a sentinel or
  units bug, against a Bernoulli 0.5 champion). Their challenger rewards reach the analysis as the
  whole array at every look, as the controller hands them over (the first three cases pass
  cumulative statistics, which are the same numbers and cheaper).

Prints JSON and writes ``bench/results/canary.json``. ``python bench/canary.py [--runs 200]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

from rlops_plugin.deploy.analysis import FINAL, PROMOTED, ROLLED_BACK, CanaryAnalysis, PromotionPolicy  # noqa: E402
from rlops_plugin.deploy.sequential import RewardStats  # noqa: E402

BASE = 0.5
RESULTS = Path(__file__).resolve().parent / "results" / "canary.json"
Draw = Callable[[np.random.Generator, int], np.ndarray]


def bernoulli(p: float, value: float = 1.0) -> Draw:
    """Rewards of ``value`` with probability ``p``, else 0."""
    return lambda rng, n: (rng.random(n) < p).astype(float) * value


def constant(value: float) -> Draw:
    """The same reward for every decision."""
    return lambda rng, n: np.full(n, value)


KINDS: dict[str, tuple[Draw, Draw, str]] = {  # challenger, champion, description
    "worse": (bernoulli(BASE * 0.9), bernoulli(BASE), "Bernoulli 0.45 vs 0.5"),
    "equal": (bernoulli(BASE), bernoulli(BASE), "Bernoulli 0.5 vs 0.5"),
    "better": (bernoulli(BASE * 1.1), bernoulli(BASE), "Bernoulli 0.55 vs 0.5"),
    "constant_reward": (constant(1.0), constant(1.0), "1.0 per decision on both sides"),
    "zero_conversion": (constant(0.0), bernoulli(0.001), "never converts vs a 0.1% champion"),
    "huge_reward": (bernoulli(BASE, 1e308), bernoulli(BASE), "Bernoulli 0.5 x 1e308 vs Bernoulli 0.5"),
}
NO_EVIDENCE = ("constant_reward", "zero_conversion", "huge_reward")


class ArrayFeed:
    """A side's rewards handed over as the whole array at every look, as the controller does.

    The controller reads every reward since the canary started from the decision log and passes the
    array; the other cases pass cumulative ``RewardStats`` (the same statistics, cheaper). The
    difference matters for absurd magnitudes: one sum over 1e308 rewards overflows at once.
    """

    def __init__(self) -> None:
        self.buffer, self.size = np.empty(1024), 0

    def add(self, values: np.ndarray) -> None:
        """Append a batch."""
        if self.size + values.size > self.buffer.size:
            self.buffer = np.resize(self.buffer, 2 * (self.size + values.size))
        self.buffer[self.size:self.size + values.size] = values
        self.size += values.size

    @property
    def rewards(self) -> np.ndarray:
        """Every reward so far."""
        return self.buffer[:self.size]


def one_canary(challenger_draw: Draw, champion_draw: Draw, policy: PromotionPolicy, rng: np.random.Generator,
               poll_every: int, max_decisions: int, challenger_array: bool = False) -> dict:
    """Run one canary to its end; return the verdict and how many decisions it took.

    ``challenger_array``: hand the challenger's rewards over as an array (see :class:`ArrayFeed`).
    """
    analysis = CanaryAnalysis(policy, started_at=0.0)
    champion = RewardStats.for_range(policy.reward_range)
    challenger: RewardStats | ArrayFeed = ArrayFeed() if challenger_array else RewardStats.for_range(
        policy.reward_range)
    total = shadow = canary_decisions = 0
    while analysis.state not in FINAL:
        n_chal = rng.binomial(poll_every, analysis.fraction)
        total += poll_every
        if analysis.state == "shadow":
            shadow += poll_every
        else:
            challenger.add(challenger_draw(rng, n_chal))
            champion.add(champion_draw(rng, poll_every - n_chal))
            canary_decisions += n_chal
        now = total / max_decisions * policy.max_duration_s
        analysis.update(challenger.rewards if isinstance(challenger, ArrayFeed) else challenger, champion,
                        now=now if total < max_decisions else policy.max_duration_s + 1, shadow_seen=shadow)
    return {"state": analysis.state, "challenger_decisions": canary_decisions, "total_decisions": total}


def summary(runs: list[dict]) -> dict:
    """Outcomes and decisions to conclude of one kind's runs."""
    concluded = [r for r in runs if r["state"] in (PROMOTED, ROLLED_BACK)]
    chal = [r["challenger_decisions"] for r in concluded]
    return {
        "outcomes": dict(Counter(r["state"] for r in runs)),
        "promoted_rate": float(np.mean([r["state"] == PROMOTED for r in runs])),
        "median_challenger_decisions_to_conclude": float(np.median(chal)) if concluded else None,
        "p95_challenger_decisions_to_conclude": float(np.percentile(chal, 95)) if concluded else None,
        "median_total_decisions_to_conclude": float(np.median([r["total_decisions"] for r in concluded]))
        if concluded else None,
        "rolled_back_within_2000_canary_decisions": float(np.mean(
            [r["state"] == ROLLED_BACK and r["challenger_decisions"] <= 2000 for r in runs])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--poll-every", type=int, default=100, help="decisions between looks at the log")
    parser.add_argument("--max-decisions", type=int, default=200_000, help="duration limit, in decisions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args()
    started = time.perf_counter()
    policy = PromotionPolicy()
    rng = np.random.default_rng(args.seed)
    results = {}
    for kind, (challenger_draw, champion_draw, _) in KINDS.items():
        results[kind] = summary([one_canary(challenger_draw, champion_draw, policy, rng, args.poll_every,
                                            args.max_decisions, challenger_array=kind in NO_EVIDENCE)
                                 for _ in range(args.runs)])
    worse, equal = results["worse"], results["equal"]
    promoted_without_evidence = {k: results[k]["outcomes"].get(PROMOTED, 0) for k in NO_EVIDENCE}
    result = {
        "benchmark": "canary", "machine": machine(), "runs_per_kind": args.runs, "seed": args.seed,
        "policy": policy.to_dict(), "rewards": {k: v[2] for k, v in KINDS.items()},
        "results": results,
        "wrong_decision_rates": {
            "worse_promoted": worse["outcomes"].get(PROMOTED, 0) / args.runs,
            "equal_rolled_back": equal["outcomes"].get(ROLLED_BACK, 0) / args.runs,
            "better_rolled_back": results["better"]["outcomes"].get(ROLLED_BACK, 0) / args.runs,
            **{f"{k}_promoted": n / args.runs for k, n in promoted_without_evidence.items()},
        },
        "targets": {
            "worse rolled back within 2000 canary decisions in >= 95% of runs":
                worse["rolled_back_within_2000_canary_decisions"] >= 0.95,
            "false rollbacks of equal candidates <= 5%": equal["outcomes"].get(ROLLED_BACK, 0) / args.runs <= 0.05,
            "no promotion without evidence (constant, zero-conversion, huge-reward challengers)":
                sum(promoted_without_evidence.values()) == 0,
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if not args.no_save:
        RESULTS.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    emit(result)


if __name__ == "__main__":
    main()
