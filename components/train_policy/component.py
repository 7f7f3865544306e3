"""Update a policy from the deployed checkpoint and log it (with lineage) to MLflow."""

from typing import NamedTuple

from kfp import dsl

from rlops_plugin.pipelines.images import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def train_policy(trainer: str, init_uri: str, dataset: dsl.Input[dsl.Dataset], model: dsl.Output[dsl.Model],
                 metrics: dsl.Output[dsl.Metrics], config_json: str = "", finetune_steps: int = 0,
                 eval_episodes: int = 20, experiment: str = "rlops-training", tracking_uri: str = "",
                 finetune_config_json: str = "", calibration_json: str = "", lora: bool = False,
                 env_json: str = "",
                 ) -> NamedTuple("Outputs", [("model_uri", str), ("run_id", str), ("return_mean", float)]):
    """Train (cql, bc, dpo; agents: sft, dpo, kto, grpo; simulator trainers ignore the dataset) and optionally
    fine-tune in the simulator; ``lora`` trains an agent's LoRA adapter; ``env_json`` (JSON or a file) replaces
    the candidate's environment part (an agent's updated task suite)."""
    import math
    from collections import namedtuple

    from rlops_plugin.pipelines import steps

    out = steps.train_policy(trainer, init_uri, dataset.path, config_json, finetune_steps, eval_episodes,
                             model.path, experiment, tracking_uri, finetune_config_json,
                             calibration_json, lora, env_json)
    model.metadata.update({"model_uri": out["model_uri"], "run_id": out["run_id"], "bundle_sha": out["bundle_sha"],
                           "dataset_digest": out["dataset_digest"]})
    for key, value in out["metrics"].items():
        if isinstance(value, float) and math.isfinite(value):
            metrics.log_metric(key.replace("/", "_"), value)
    ret = float(out["metrics"].get("eval/return_mean", float("nan")))
    return namedtuple("Outputs", ["model_uri", "run_id", "return_mean"])(out["model_uri"], out["run_id"], ret)
