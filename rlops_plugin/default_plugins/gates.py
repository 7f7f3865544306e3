"""Built-in gate checks, registered through the same hook as third-party checks."""

from __future__ import annotations

from typing import Any

from rlops_plugin.hookspecs import hookimpl


def check_ope(ctx: Any) -> Any:
    """The ``ope`` check of the candidate's kind: bandit/sequential estimates for vector policies, sequence
    log-prob importance weights for agents (:mod:`rlops_plugin.evaluation.agent_ope`)."""
    from rlops_plugin.evaluation import gate
    from rlops_plugin.evaluation.agent_ope import check_agent_ope

    if getattr(ctx.candidate.bundle.policy, "kind", None) == "agent":
        return check_agent_ope(ctx)
    return gate.check_ope(ctx)


@hookimpl
def rlops_register_gate_checks(register) -> None:
    """Register lineage, regression, min_return, scenarios and ope."""
    from rlops_plugin.evaluation import gate

    register("lineage", gate.check_lineage, description="env/reward hashes agree or comparison is explicit")
    register("regression", gate.check_regression, description="paired comparison vs the champion")
    register("min_return", gate.check_min_return, description="absolute floor on the mean return")
    register("scenarios", gate.check_scenarios, description="safety and red-team scenario suites")
    register("ope", check_ope, description="off-policy estimate from the champion's logs (decisions or answers)")
