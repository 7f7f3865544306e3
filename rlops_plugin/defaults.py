"""Named defaults of the lifecycle, in one place, so the CLI, components, evaluator and gate agree.

Each is a measured or conventional choice; change it here and every edge follows.
"""

from __future__ import annotations

EVAL_SEED = 20_000
"""First episode seed of every held-out evaluation (rlops evaluate, the component, the gate, the MLflow evaluator).
Disjoint from TRAIN_EVAL_SEED, so a gate never scores a policy on the episodes its trainer selected on."""

EVAL_EPISODES = 20
"""Episodes of an evaluation, of the gate's paired comparison, and of training's before/after evaluation."""

TRAIN_EVAL_SEED = 10_000
"""First episode seed of the before/after evaluation that training logs with each update."""

CONFIDENCE = 0.95
"""Confidence of every interval an evaluation reports."""

EXPERIMENT = "rlops-training"
"""MLflow experiment of training runs."""

JOIN_WINDOW_S = 3600.0
"""Seconds after a decision within which its reward or feedback counts; later ones are late."""

JOIN_GRACE_S = 300.0
"""Seconds feedback for an unknown decision id waits before it is orphaned."""

MONITOR_WINDOW = 1000
"""Decisions per drift window."""

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
"""Registry aliases of the serving policy, the candidate, and the one a rollback restores."""

MONITOR_REFERENCE_DECISIONS = 20_000
"""Decisions of the champion's own simulated rollouts that make the default drift reference (not a seed:
the reference spec ``rollouts:N`` reads N as a number of decisions)."""

MONITOR_REFERENCE = f"rollouts:{MONITOR_REFERENCE_DECISIONS}"
"""The default drift reference of the pipelines' monitor step."""
