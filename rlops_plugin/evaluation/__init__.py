"""Evaluation: rollouts, scenarios, regression, off-policy estimates, gates."""
