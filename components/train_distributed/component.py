"""Update a policy in a Kubeflow Trainer TrainJob (torchrun over several nodes/processes) and log it to MLflow."""

from typing import NamedTuple

from kfp import dsl

from rlops_plugin.pipelines.images import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def train_distributed(trainer: str, init_uri: str, dataset: dsl.Input[dsl.Dataset], metrics: dsl.Output[dsl.Metrics],
                      config_json: str = "", num_nodes: int = 2, nproc_per_node: int = 1, trainjob_json: str = "",
                      eval_episodes: int = 20, experiment: str = "rlops-training", tracking_uri: str = "",
                      finetune_steps: int = 0, calibration_json: str = "", lora: bool = False, env_json: str = "",
                      ) -> NamedTuple("Outputs", [("model_uri", str), ("run_id", str), ("return_mean", float),
                                                  ("job_name", str)]):
    """Train in a TrainJob of ``num_nodes`` x ``nproc_per_node`` torchrun workers (the dataset is logged to MLflow
    first); ``trainjob_json`` sets namespace, runtime, image, resources, env, timeout_s. Outputs as train_policy's."""
    import math
    from collections import namedtuple

    from rlops_plugin.pipelines import steps

    out = steps.train_distributed(trainer, init_uri, dataset.path, config_json, num_nodes, nproc_per_node,
                                  trainjob_json, eval_episodes, experiment, tracking_uri, finetune_steps,
                                  calibration_json, lora, env_json)
    for key, value in out["metrics"].items():
        if isinstance(value, float) and math.isfinite(value):
            metrics.log_metric(key.replace("/", "_"), value)
    ret = float(out["metrics"].get("eval/return_mean", float("nan")))
    return namedtuple("Outputs", ["model_uri", "run_id", "return_mean", "job_name"])(
        out["model_uri"], out["run_id"], ret, out["job_name"])
