"""Tune a trainer's config over a search space (Optuna, in the pod); every trial an MLflow child run."""

from typing import NamedTuple

from kfp import dsl

from rlops_plugin.pipelines.images import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def tune_policy(space_json: str, init_uri: str, dataset: dsl.Input[dsl.Dataset], metrics: dsl.Output[dsl.Metrics],
                trials: int = 0, seed: int = 0, sampler: str = "tpe", eval_episodes: int = 20,
                experiment: str = "rlops-training", tracking_uri: str = "",
                ) -> NamedTuple("Outputs", [("best_config_json", str), ("run_id", str), ("best_value", float),
                                            ("default_value", float)]):
    """Search the space (inline JSON or a file; ``trials`` 0: the space's budget) from ``init_uri``; simulator
    trainers ignore the dataset. ``best_config_json`` feeds ``train_policy``'s ``config_json``."""
    from collections import namedtuple

    from rlops_plugin.pipelines import steps

    out = steps.tune_policy(space_json, init_uri, dataset.path, trials, seed, sampler, eval_episodes, experiment,
                            tracking_uri)
    metrics.log_metric("best_value", out["best_value"])
    metrics.log_metric("default_value", out["default_value"])
    metrics.log_metric("trials", float(out["summary"]["trials"]))
    metrics.log_metric("pruned", float(out["summary"]["pruned"]))
    outputs = namedtuple("Outputs", ["best_config_json", "run_id", "best_value", "default_value"])
    return outputs(out["best_config_json"], out["run_id"], out["best_value"], out["default_value"])
