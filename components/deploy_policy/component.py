"""Progressive delivery of NAME@challenger: shadow, canary steps, then promote or roll back."""

from typing import NamedTuple

from kfp import dsl

from rlops_plugin.pipelines.images import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def deploy_policy(name: str, deployment: str, store: str, target: str = "rlops-local", promotion_json: str = "",
                  served_model: str = "policy", simulate_traffic: bool = False, traffic_envs: int = 16,
                  tracking_uri: str = "", traffic_env_json: str = ""
                  ) -> NamedTuple("Outputs", [("state", str), ("reason", str)]):
    """Route the challenger through the deployment target (rlops-local or rlops-kserve) until a verdict."""
    from collections import namedtuple

    from rlops_plugin.pipelines import steps

    out = steps.deploy_policy(name, deployment, store, target, promotion_json, served_model, simulate_traffic,
                              traffic_envs, tracking_uri, traffic_env_json)
    return namedtuple("Outputs", ["state", "reason"])(out["state"], out["reason"])
