"""Deploy, promote, roll back and approve: each change made through a target and the registry, each an event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlops_plugin.audit.approvals import approve as record_approval
from rlops_plugin.audit.events import AuditEvent, record_event
from rlops_plugin.defaults import CHAMPION
from rlops_plugin.deploy.analysis import Action, PromotionPolicy
from rlops_plugin.deploy.promotion import PromotionController
from rlops_plugin.deploy.targets import deploy_client, pinned_version, record_deployment, route
from rlops_plugin.flavor import registry
from rlops_plugin.flavor.refs import ModelRef


def deploy(target: str, deployment: str, model_uri: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create ``deployment`` serving ``model_uri`` on ``target``; a target that does not audit itself gets the event."""
    client = deploy_client(target)
    version = None if _audits_itself(client) else pinned_version(model_uri)
    state = client.create_deployment(deployment, model_uri, config=config or {})
    if not _audits_itself(client):
        record_deployment(target, deployment, "created", model_uri, config, version)
    return state


def promote(name: str, deployment: str, target: str, store: str, policy: PromotionPolicy | dict[str, Any] | None = None,
            *, served_model: str | None = None, max_polls: int | None = None,
            on_action: Callable[[Action], None] | None = None) -> tuple[Action, PromotionController]:
    """Take ``name@challenger`` through shadow and canary on ``deployment`` to promotion or rollback."""
    policy = policy if isinstance(policy, PromotionPolicy) else PromotionPolicy(**(policy or {}))
    controller = PromotionController(name, deployment, target, store, policy, served_model=served_model)
    return controller.run(max_polls=max_polls, on_action=on_action), controller


def rollback(name: str, *, deployment: str | None = None, target: str = "rlops-local") -> tuple[str | None, str]:
    """Point ``name@champion`` back at ``name@previous``, switch ``deployment`` to it; returns (before, restored)."""
    before = registry.get_alias_version(name, CHAMPION)
    restored = registry.rollback(name)
    if deployment:
        route(deploy_client(target), deployment, ModelRef.of(name, version=restored).uri, None, "off", 0.0)
    record_event(AuditEvent("rollback", name, restored, decision="rolled_back",
                            reason=f"manual rollback: champion {before} -> {restored}",
                            details={"deployment": deployment, "from": before, "to": restored}))
    return before, restored


def crown(name: str, version: str, reason: str, metrics: dict[str, float] | None = None) -> AuditEvent:
    """Make ``version`` the champion without a canary (the first version: there is nothing to compare against)."""
    previous = registry.promote(name, version)
    return record_event(AuditEvent("promotion", name, str(version), decision="promoted", reason=reason,
                                   metrics=dict(metrics or {}),
                                   details={"previous_champion": previous, "new_champion": str(version)}))


def approve(name: str, version: str, actor: str | None = None, note: str = "") -> AuditEvent:
    """Approve ``name`` ``version`` for full promotion: registry tags and an ``approval`` event (who, when, why)."""
    return record_approval(name, version, actor, note)


def _audits_itself(client: Any) -> bool:
    """True for a client that records a ``deployment`` event on every change itself (``audits_itself = True``)."""
    return bool(getattr(client, "audits_itself", False))
