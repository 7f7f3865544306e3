"""Evaluate one policy: rollouts on fixed seeds and scenario suites, with namespaced metrics.

The one implementation behind ``rlops evaluate``, the ``evaluate_policy`` component and the MLflow
evaluator; the gate compares two policies on the same seeds (``evaluation.gate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.defaults import CONFIDENCE, EVAL_EPISODES, EVAL_SEED
from rlops_plugin.kinds.base import kind_of


@dataclass
class PolicyEvaluation:
    """What an evaluation found: the rollout summary and each scenario suite's results."""

    policy_version: str
    episodes: int
    seed: int
    rollouts: dict[str, Any]
    scenarios: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def passed_scenarios(self) -> bool:
        """True when every scenario of every suite passed (also when there were none)."""
        return all(r["passed"] for results in self.scenarios.values() for r in results)

    def metrics(self) -> dict[str, float]:
        """``eval/...``, ``eval/action_<i>_frequency`` and ``scenario/<suite>/<scenario>/...`` metrics."""
        out = {f"eval/{k}": float(v) for k, v in self.rollouts.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for i, freq in enumerate(self.rollouts.get("action_frequencies") or []):
            out[f"eval/action_{i}_frequency"] = float(freq)
        for suite, results in self.scenarios.items():
            for r in results:
                out[f"scenario/{suite}/{r['scenario']}/passed"] = float(r["passed"])
                out[f"scenario/{suite}/{r['scenario']}/return_mean"] = float(r["return_mean"])
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the model, the seeds, the rollout summary and the scenarios."""
        return {"model": self.policy_version, "episodes": self.episodes, "seed": self.seed,
                "rollouts": self.rollouts, "scenarios": self.scenarios}


def evaluate_policy(bundle: PolicyBundle, *, episodes: int = EVAL_EPISODES, seed: int = EVAL_SEED,
                    scenarios: list[str] | tuple[str, ...] = (), confidence: float = CONFIDENCE,
                    policy_version: str | None = None) -> PolicyEvaluation:
    """Roll ``bundle`` out on seeds ``seed .. seed+episodes-1`` and through each scenario suite."""
    kind = kind_of(bundle)
    summary = kind.rollout(bundle.policy, bundle.env_spec, range(seed, seed + episodes),
                           reward_spec=bundle.reward_spec).summary(confidence)
    results: dict[str, list[dict[str, Any]]] = {}
    for ref in scenarios:
        name, _, suite_results = kind.run_suite(bundle.policy, bundle.env_spec, ref, bundle.reward_spec)
        results[name] = [r.to_dict() for r in suite_results]
    return PolicyEvaluation(policy_version or bundle.bundle_sha[:12], episodes, seed, summary, results)
