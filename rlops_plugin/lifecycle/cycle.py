"""Close an improvement cycle: one ``pipeline_cycle`` event, whatever happened (the pipeline's exit handler)."""

from __future__ import annotations

from rlops_plugin.audit.events import AuditEvent, record_event
from rlops_plugin.defaults import CHALLENGER, CHAMPION
from rlops_plugin.flavor.registry import get_alias_version


def record_cycle(name: str, status: str, error: str = "", pipeline_run: str = "",
                 pipeline: str = "continuous-improvement") -> AuditEvent:
    """Record the cycle's outcome with the aliases it left behind (``pipeline`` names which cycle ran)."""
    champion = get_alias_version(name, CHAMPION)
    return record_event(AuditEvent("pipeline_cycle", name, champion, decision=status.lower(),
                                   reason=error or f"{pipeline} cycle {status.lower()}",
                                   details={"pipeline": pipeline, "pipeline_run": pipeline_run,
                                            "champion_after": champion,
                                            "challenger_after": get_alias_version(name, CHALLENGER)}))
