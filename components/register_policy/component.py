"""Register a trained policy with lineage tags and point an alias (default ``challenger``) at it."""

from kfp import dsl

from rlops_plugin.pipelines.images import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def register_policy(model_uri: str, name: str, gate_result: dsl.Input[dsl.Artifact] = None,
                    alias: str = "challenger", tracking_uri: str = "") -> str:
    """Return the new registry version; the update (and its gate result, when given) is audited."""
    from rlops_plugin.pipelines import steps

    gate_json = open(gate_result.path).read() if gate_result is not None else ""
    return steps.register_policy(model_uri, name, alias, gate_json, tracking_uri)["version"]
