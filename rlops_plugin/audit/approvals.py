"""Human approval of a version for promotion: registry tags plus an ``approval`` audit event.

Used by ``rlops approve`` and by anything else that approves (the demo's stand-in operator), so an
approval always leaves the same record: who, when, why, on which version.
"""

from __future__ import annotations

from rlops_plugin.audit.events import AuditEvent, current_actor, record_event


def approve(name: str, version: str | int, actor: str | None = None, note: str = "") -> AuditEvent:
    """Approve ``name`` ``version`` (a canary waiting with ``require_approval`` then promotes it)."""
    from rlops_plugin.flavor.registry import approve as tag_approval

    who = actor or current_actor()
    tags = tag_approval(name, version, who, note)
    return record_event(AuditEvent("approval", name, str(version), actor=who, decision="approved",
                                   reason=note or "approved", details=tags))
