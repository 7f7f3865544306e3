"""Regression vs the champion: paired returns on identical episodes, with a stated confidence.

Both policies play the same seeds (same initial states and randomized physics), so the
per-episode difference removes most episode-to-episode noise. The candidate **fails** when it is
confidently worse by more than the margin: the upper end of the paired-bootstrap interval of
``mean(candidate - champion)`` lies below ``-margin``. With ``non_inferiority=True`` the burden
flips: it **passes** only when the lower end lies above ``-margin`` (inconclusive fails).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlops_plugin.simulation.rollouts import RolloutReport
from rlops_plugin.simulation.stats import Interval, paired_difference


@dataclass(frozen=True)
class RegressionResult:
    """The paired comparison and its verdict."""

    passed: bool
    reason: str
    difference: Interval
    margin: float
    candidate_mean: float
    champion_mean: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"passed": self.passed, "reason": self.reason, "difference": self.difference.to_dict(),
                "margin": self.margin, "candidate_mean": self.candidate_mean, "champion_mean": self.champion_mean}


def compare(candidate: RolloutReport, champion: RolloutReport, margin: float = 0.05, relative: bool = True,
            confidence: float = 0.95, non_inferiority: bool = False, seed: int = 0) -> RegressionResult:
    """Paired comparison of two reports on the same seeds (see the module docstring)."""
    if candidate.seeds != champion.seeds:
        raise ValueError("regression needs both policies evaluated on the same episode seeds")
    diff = paired_difference(candidate.returns, champion.returns, confidence=confidence, seed=seed)
    champion_mean = float(champion.returns.mean())
    allowed = margin * abs(champion_mean) if relative else margin
    what = f"{margin:.0%} of the champion's {champion_mean:.1f}" if relative else f"{margin:g}"
    interval = f"[{diff.low:+.2f}, {diff.high:+.2f}] at {confidence:.0%}"
    if non_inferiority:
        passed = diff.low > -allowed
        reason = (f"non-inferior: return difference {interval} stays above -{allowed:.2f} ({what})" if passed else
                  f"not shown non-inferior: return difference {interval} reaches below -{allowed:.2f} ({what})")
    else:
        passed = not diff.high < -allowed
        reason = (f"no regression beyond the margin: return difference {interval}, margin {allowed:.2f} ({what})"
                  if passed else
                  f"regression: return difference {interval} is below -{allowed:.2f} ({what})")
    return RegressionResult(passed, reason, diff, allowed, float(candidate.returns.mean()), champion_mean)
