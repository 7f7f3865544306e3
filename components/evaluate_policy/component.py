"""Roll a policy out on fixed seeds and through scenario suites; publish an HTML summary."""

from kfp import dsl

from rlops_plugin.pipelines.images import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def evaluate_policy(model_uri: str, report: dsl.Output[dsl.HTML], metrics: dsl.Output[dsl.Metrics],
                    episodes: int = 20, scenarios_json: str = "[]", tracking_uri: str = "") -> float:
    """Return the mean evaluation return (also logged as a metric)."""
    from rlops_plugin.pipelines import steps

    out = steps.evaluate_policy(model_uri, episodes, scenarios_json, report.path, tracking_uri)
    metrics.log_metric("return_mean", float(out["return_mean"]))
    return float(out["return_mean"])
