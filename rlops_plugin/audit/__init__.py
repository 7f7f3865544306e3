"""The audit trail: every policy update, gate, promotion, rollback and approval as an MLflow event."""

from rlops_plugin.audit.events import AuditEvent, list_events, record_event

__all__ = ["AuditEvent", "list_events", "record_event"]
