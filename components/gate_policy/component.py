"""The promotion gate: candidate vs champion, with every reason."""

from kfp import dsl

from rlops_plugin.pipelines.images import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def gate_policy(candidate_uri: str, champion_uri: str, result: dsl.Output[dsl.Artifact], policy_json: str = "",
                tracking_uri: str = "", scenarios_json: str = "", ope_store: str = "", ope_model: str = "") -> bool:
    """Return whether the candidate passed; the full result (every check and reason) goes to ``result``.

    ``scenarios_json`` adds suites (e.g. a red-team suite) and ``ope_store`` the ``ope`` check on the logs of
    ``ope_model`` to ``policy_json``.

    A single boolean output keeps ``dsl.If(gate.outputs["Output"] == True)`` portable (kfp.local
    resolves single outputs in conditions).
    """
    from rlops_plugin.pipelines import steps

    out = steps.gate_policy(candidate_uri, champion_uri, policy_json, result.path, tracking_uri, scenarios_json,
                            ope_store, ope_model)
    result.metadata.update({"passed": out["passed"], "reasons": out["reasons"]})
    return bool(out["passed"])
