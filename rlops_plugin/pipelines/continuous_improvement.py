"""The ``continuous_improvement`` pipeline: one improvement cycle of a deployed policy.

build dataset -> calibrate the simulator on the newest logs (optional) -> train from the champion (in this
step's pod, or in a Kubeflow Trainer TrainJob when ``num_nodes`` or ``nproc_per_node`` > 1) -> evaluate
-> gate -> if passed: register as challenger -> shadow -> canary -> promote or roll back.
An exit handler records the cycle in the audit trail whatever happens. Every step is a component
from ``components/`` and every knob a parameter.
"""

from kfp import dsl  # no ``from __future__ import annotations``: kfp reads the real annotation types

from components.build_dataset.component import build_dataset
from components.calibrate_env.component import calibrate_env
from components.deploy_policy.component import deploy_policy
from components.evaluate_policy.component import evaluate_policy
from components.gate_policy.component import gate_policy
from components.record_cycle.component import record_cycle
from components.register_policy.component import register_policy
from components.train_distributed.component import train_distributed
from components.train_policy.component import train_policy
from rlops_plugin.defaults import EVAL_EPISODES, JOIN_WINDOW_S

PIPELINE_NAME = "rlops-continuous-improvement"


@dsl.pipeline(name=PIPELINE_NAME, description="Retrain a deployed RL policy from its own traffic, gate it, "
                                              "canary it, promote or roll back.")
def continuous_improvement(
    model_name: str,
    store: str,
    tracking_uri: str = "",
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
    """One cycle for ``model_name`` (the champion is ``models:/<model_name>@champion``).

    ``calibration_window`` > 0 fits the EnvSpec's declared ``calibration`` parameters (or
    ``calibration_params_json``) to that many newest logged transitions, and the simulator
    fine-tuning trains around the fitted physics. ``num_nodes`` or ``nproc_per_node`` > 1 trains in a
    Kubeflow Trainer TrainJob (``train_distributed``; ``trainjob_json``: namespace, runtime, image,
    resources, env, timeout_s) instead of the in-process ``train_policy`` step.
    """
    champion = f"models:/{model_name}@champion"
    with dsl.ExitHandler(record_cycle(name=model_name, tracking_uri=tracking_uri)):
        data = build_dataset(store=store, bundle_uri=champion, served_model=served_model, window_s=join_window_s,
                             tracking_uri=tracking_uri)
        fitted = calibrate_env(dataset=data.outputs["dataset"], bundle_uri=champion, recent=calibration_window,
                               params_json=calibration_params_json, tracking_uri=tracking_uri)
        distributed = {"trainer": trainer, "init_uri": champion, "dataset": data.outputs["dataset"],
                       "config_json": trainer_config_json, "num_nodes": num_nodes, "nproc_per_node": nproc_per_node,
                       "trainjob_json": trainjob_json, "finetune_steps": finetune_steps,
                       "eval_episodes": eval_episodes, "tracking_uri": tracking_uri,
                       "calibration_json": fitted.outputs["calibration_json"]}
        with dsl.If(num_nodes > 1, name="multi-node"):
            nodes = train_distributed(**distributed)
        with dsl.Elif(nproc_per_node > 1, name="multi-process"):
            procs = train_distributed(**distributed)
        with dsl.Else(name="in-process"):
            local = train_policy(trainer=trainer, init_uri=champion, dataset=data.outputs["dataset"],
                                 config_json=trainer_config_json, finetune_steps=finetune_steps,
                                 finetune_config_json=finetune_config_json, eval_episodes=eval_episodes,
                                 tracking_uri=tracking_uri, calibration_json=fitted.outputs["calibration_json"])
        model_uri = dsl.OneOf(nodes.outputs["model_uri"], procs.outputs["model_uri"], local.outputs["model_uri"])
        evaluate_policy(model_uri=model_uri, episodes=eval_episodes, scenarios_json=scenarios_json,
                        tracking_uri=tracking_uri)
        verdict = gate_policy(candidate_uri=model_uri, champion_uri=champion,
                              policy_json=gate_policy_json, tracking_uri=tracking_uri)
        with dsl.If(verdict.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 - kfp condition syntax
            registered = register_policy(model_uri=model_uri, name=model_name,
                                         gate_result=verdict.outputs["result"], tracking_uri=tracking_uri)
            with dsl.If(deployment != "", name="has-deployment"):
                deploy_policy(name=model_name, deployment=deployment, store=store, target=target,
                              promotion_json=promotion_json, served_model=served_model,
                              simulate_traffic=simulate_traffic, traffic_env_json=traffic_env_json,
                              tracking_uri=tracking_uri).after(registered)
