"""Built-in drift monitors: observations, actions, propensities, rewards and episode returns."""

from __future__ import annotations

from rlops_plugin.hookspecs import Register, hookimpl

DESCRIPTIONS = {
    "observations": "each observation feature obs_i (Evidently stat test per column)",
    "actions": "action frequencies (categorical; Box actions per dimension)",
    "propensities": "per-action probabilities prob_k and policy entropy (Box: logged propensity)",
    "rewards": "per-decision joined reward",
    "returns": "per-episode return of the episodes that ended in the window",
}


@hookimpl
def rlops_register_monitors(register: Register) -> None:
    """Register the built-in column drift monitors (one per signal); they accept no ``settings``."""
    from rlops_plugin.monitoring.drift import BUILTIN_MONITOR_SETTINGS, builtin_factory

    for signal, description in DESCRIPTIONS.items():
        register(signal, builtin_factory(signal), description=description, settings=BUILTIN_MONITOR_SETTINGS)
