"""Built-in gate checks, registered through the same hook as third-party checks."""

from __future__ import annotations

from rlops_plugin.hookspecs import hookimpl


@hookimpl
def rlops_register_gate_checks(register) -> None:
    """Register lineage, regression, min_return, scenarios and ope."""
    from rlops_plugin.evaluation import gate

    register("lineage", gate.check_lineage, description="env/reward hashes agree or comparison is explicit")
    register("regression", gate.check_regression, description="paired comparison vs the champion")
    register("min_return", gate.check_min_return, description="absolute floor on the mean return")
    register("scenarios", gate.check_scenarios, description="safety and red-team scenario suites")
    register("ope", gate.check_ope, description="off-policy estimate from the champion's logs")
