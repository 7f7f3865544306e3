"""``monitor_and_improve``: watch the champion; when a trigger fires, run one improvement cycle.

Schedule it (``rlops pipeline submit --cron``) for drift-driven retraining on a cluster: the monitor
step evaluates the new windows and, only if a trigger rule fired, the ``continuous_improvement``
pipeline runs as a nested pipeline with the same parameters.
"""

from kfp import dsl  # no ``from __future__ import annotations``: kfp reads the real annotation types

from components.monitor_policy.component import monitor_policy
from rlops_plugin.defaults import EVAL_EPISODES, JOIN_WINDOW_S, MONITOR_REFERENCE, MONITOR_WINDOW
from rlops_plugin.pipelines.continuous_improvement import continuous_improvement
from rlops_plugin.pipelines.images import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def _triggered(events_json: str) -> bool:
    """True when the monitor fired at least one trigger (a single output, usable in ``dsl.If``)."""
    import json

    return bool(json.loads(events_json))


@dsl.pipeline(name="rlops-monitor-and-improve",
              description="Monitor a deployed policy for drift; retrain, gate and canary when a trigger fires.")
def monitor_and_improve(
    model_name: str,
    store: str,
    tracking_uri: str = "",
    reference: str = MONITOR_REFERENCE,
    window: int = MONITOR_WINDOW,
    triggers_json: str = "",
    served_model: str = "policy",
    trainer: str = "cql",
    trainer_config_json: str = "",
    finetune_steps: int = 0,
    finetune_config_json: str = "",
    eval_episodes: int = EVAL_EPISODES,
    scenarios_json: str = "[]",
    gate_policy_json: str = "",
    deployment: str = "",
    target: str = "rlops-local",
    promotion_json: str = "",
    simulate_traffic: bool = False,
    traffic_env_json: str = "",
    join_window_s: float = JOIN_WINDOW_S,
    calibration_window: int = 0,
    calibration_params_json: str = "",
    num_nodes: int = 1,
    nproc_per_node: int = 1,
    trainjob_json: str = "",
) -> None:
    """Monitor ``models:/<model_name>@champion``; improve it when drift or degradation is detected
    (the improvement parameters are ``continuous_improvement``'s, passed through)."""
    watch = monitor_policy(model=f"{model_name}@champion", store=store, reference=reference, window=window,
                           triggers_json=triggers_json, tracking_uri=tracking_uri)
    fired = _triggered(events_json=watch.outputs["events_json"])
    with dsl.If(fired.output == True, name="trigger-fired"):  # noqa: E712 - kfp condition syntax
        continuous_improvement(model_name=model_name, store=store, tracking_uri=tracking_uri,
                               served_model=served_model, trainer=trainer, trainer_config_json=trainer_config_json,
                               finetune_steps=finetune_steps, finetune_config_json=finetune_config_json,
                               eval_episodes=eval_episodes, scenarios_json=scenarios_json,
                               gate_policy_json=gate_policy_json, deployment=deployment, target=target,
                               promotion_json=promotion_json, simulate_traffic=simulate_traffic,
                               traffic_env_json=traffic_env_json, join_window_s=join_window_s,
                               calibration_window=calibration_window,
                               calibration_params_json=calibration_params_json, num_nodes=num_nodes,
                               nproc_per_node=nproc_per_node, trainjob_json=trainjob_json)
