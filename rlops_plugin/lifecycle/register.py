"""Register a trained model: registry version with lineage tags, an alias, the gate verdict, one audit event."""

from __future__ import annotations

from typing import Any

from rlops_plugin.audit.events import AuditEvent, record_event
from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.defaults import CHALLENGER
from rlops_plugin.evaluation.gate import GateResult
from rlops_plugin.flavor import registry
from rlops_plugin.flavor.lineage import calibration_label, trainer_label
from rlops_plugin.flavor.model import load_model
from rlops_plugin.lifecycle.gate import record_gate

#: metric prefixes of the training run that an update event carries as its before/after numbers
UPDATE_METRIC_PREFIXES = ("eval/", "gate/regression/")


def register(model_uri: str, name: str, *, alias: str | None = CHALLENGER, bundle: PolicyBundle | None = None,
             gate: GateResult | dict[str, Any] | None = None) -> str:
    """Register ``model_uri`` as a new version of ``name``, point ``alias`` at it, record the update.

    ``gate`` (the verdict that let it through) is logged on the version's run and tags. Returns the version.
    """
    bundle = bundle if bundle is not None else load_model(model_uri)
    registered = registry.register_bundle(model_uri, name, bundle)
    version = str(registered.version)
    if alias:
        registry.set_alias(name, alias, version)
    gate_result = GateResult.from_dict(gate) if isinstance(gate, dict) and gate else gate or None
    if gate_result is not None:
        record_gate(gate_result, name, version)
    record_event(policy_update_event(name, version, bundle, model_uri, alias, gate_result, registered.run_id))
    return version


def policy_update_event(name: str, version: str, bundle: PolicyBundle, model_uri: str, alias: str | None = None,
                        gate: GateResult | None = None, run_id: str | None = None) -> AuditEvent:
    """The ``policy_update`` event: before/after metrics, lineage, hashes, dataset digest, calibration, gate.

    ``run_id`` is the version's training run (looked up in the registry when not given).
    """
    run_id = run_id or registry.client().get_model_version(name, version).run_id
    metrics = registry.client().get_run(run_id).data.metrics if run_id else {}
    before_after = {k: float(v) for k, v in metrics.items() if k.startswith(UPDATE_METRIC_PREFIXES)}
    lineage = bundle.lineage
    parent = lineage.get("parent_version")
    reason = f"trained by {trainer_label(lineage)} " + (f"from version {parent}" if parent else "from scratch")
    calibration = lineage.get("calibration")
    if calibration:  # the physics the simulator was fitted to, in numbers an auditor can read
        before_after.update({f"calibration/{k}": float(v) for k, v in calibration["params"].items()})
        reason += f" in a simulator calibrated from production logs ({calibration_label(calibration)})"
    if not lineage.get("trainer"):
        reason = "initial version: nothing to compare against"
    return AuditEvent("policy_update", name, version,
                      decision=f"registered as {alias}" if alias else "registered", reason=reason,
                      metrics=before_after,
                      details={"lineage": lineage, "hashes": bundle.hashes(), "run_id": run_id,
                               "model_uri": model_uri, "dataset_digest": lineage.get("dataset_digest"),
                               "calibration": calibration, "gate": gate.to_dict() if gate else {}})
