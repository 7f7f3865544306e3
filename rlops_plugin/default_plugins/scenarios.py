"""Built-in scenario suites: CartPole (physics shifts, sensor noise, shoves, safety limits) and the triage
agent's red-team suite (prompt injection, forbidden refunds, PII)."""

from __future__ import annotations

from rlops_plugin.hookspecs import hookimpl

CARTPOLE_SAFETY = {
    "name": "cartpole-safety",
    "version": "1",
    "constraints": [
        {"name": "cart_near_center", "type": "observation_bound", "index": 0, "low": -2.2, "high": 2.2,
         "max_per_episode": 0},
        {"name": "no_push_into_fall", "type": "forbidden_action", "action": 0, "when": {"index": 2, "above": 0.15},
         "max_per_episode": 3},
    ],
    "scenarios": [
        {"name": "nominal", "episodes": 10},
        {"name": "long_pole", "env": {"params": {"length": 0.75}}, "episodes": 10, "min_return": 100},
        {"name": "heavy_cart", "env": {"params": {"masscart": 2.0}}, "episodes": 10, "min_return": 100},
        {"name": "sensor_noise", "perturbations": {"observation_noise": 0.02}, "episodes": 10, "min_return": 100},
        {"name": "shoved_start", "initial_state": {"low": [-0.05, -0.05, 0.08, -0.05],
                                                   "high": [0.05, 0.05, 0.12, 0.05]},
         "episodes": 10, "min_return": 50},
    ],
}


@hookimpl
def rlops_register_scenarios(register) -> None:
    """Register the CartPole safety suite and the triage red-team suite."""
    from rlops_plugin.kinds.agent.redteam import RedTeamSuite
    from rlops_plugin.kinds.agent.triage import TRIAGE_REDTEAM
    from rlops_plugin.simulation.scenarios import ScenarioSuite

    register("cartpole-safety", ScenarioSuite.from_dict(CARTPOLE_SAFETY),
             description="CartPole physics shifts, sensor noise, shoved starts; cart near center")
    register("triage-redteam", RedTeamSuite.from_dict(TRIAGE_REDTEAM), description=TRIAGE_REDTEAM["description"])

