"""The promotion gate as a lifecycle step: evaluate candidate vs champion, record the verdict where people look."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rlops_plugin.audit.events import AuditEvent, record_event
from rlops_plugin.evaluation.gate import GatePolicy, GateResult
from rlops_plugin.evaluation.gate import gate as evaluate_gate
from rlops_plugin.flavor import registry
from rlops_plugin.flavor.model import LoadedModel, load_model_with_source
from rlops_plugin.flavor.refs import ModelRef


def gate(candidate: str | LoadedModel, champion: str | LoadedModel | None,
         policy: GatePolicy | dict[str, Any] | None = None, *, record: bool = True,
         result_path: str | Path | None = None, scenarios: list[str] | tuple[str, ...] = (),
         ope_store: str | None = None, ope_model: str | None = None) -> GateResult:
    """Decide whether ``candidate`` may replace ``champion``; with ``record`` log it on the run, tags and trail.

    A champion alias that is not set yet (the first version) means there is nothing to compare against.
    ``scenarios``, ``ope_store`` and ``ope_model`` complete ``policy`` (see :func:`with_inputs`).
    """
    policy = with_inputs(policy, scenarios=scenarios, ope_store=ope_store, ope_model=ope_model)
    cand = candidate if isinstance(candidate, LoadedModel) else load_model_with_source(candidate)
    champ_ref = ModelRef.parse(champion) if isinstance(champion, str) and champion else None
    if champ_ref is not None and champ_ref.alias and registry.get_alias_version(
            str(champ_ref.name), champ_ref.alias) is None:
        champion = None
    champ = champion if isinstance(champion, LoadedModel) or champion is None else load_model_with_source(champion)
    result = evaluate_gate(cand, champ, policy)
    if record:
        if cand.version:
            record_gate(result, cand.name, cand.version)
        audit_name = cand.name or (champ.name if champ else None) or (champ_ref.name if champ_ref else None)
        if audit_name:
            audit_gate(result, audit_name, cand.version, candidate_uri=cand.model_uri)
    if result_path:
        Path(result_path).parent.mkdir(parents=True, exist_ok=True)
        Path(result_path).write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


def with_inputs(policy: GatePolicy | dict[str, Any] | None, *, scenarios: list[str] | tuple[str, ...] = (),
                ope_store: str | None = None, ope_model: str | None = None) -> GatePolicy:
    """``policy`` with more scenario suites (e.g. a red-team suite) and, with ``ope_store``, the ``ope`` check
    on that store's logs of ``ope_model``: what a pipeline passes as parameters instead of policy JSON."""
    base = policy if isinstance(policy, GatePolicy) else GatePolicy.from_dict(policy or {})
    changes: dict[str, Any] = {}
    extra = [s for s in scenarios if s not in base.scenarios]
    if extra:
        changes["scenarios"] = [*base.scenarios, *extra]
        if "scenarios" not in base.checks:
            changes["checks"] = [*base.checks, "scenarios"]
    if ope_store:
        changes["ope_store"] = ope_store
        if "ope" not in base.checks:
            changes["checks"] = [*changes.get("checks", base.checks), "ope"]
    if ope_model:
        changes["ope_model"] = ope_model
    return dataclasses.replace(base, **changes) if changes else base


def record_gate(result: GateResult, name: str | None = None, version: str | None = None,
                run_id: str | None = None) -> str | None:
    """Log the result on the candidate's run (metrics + ``gate/result.json``) and tag its model version."""
    client = registry.client()
    if name and version and run_id is None:
        run_id = client.get_model_version(name, version).run_id
    if run_id:
        for key, value in result.metrics().items():
            client.log_metric(run_id, key, value)
        client.log_text(run_id, json.dumps(result.to_dict(), indent=2, default=str), "gate/result.json")
        client.set_tag(run_id, "rlops.gate", "passed" if result.passed else "failed")
    if name and version:
        client.set_model_version_tag(name, version, "rlops.gate", "passed" if result.passed else "failed")
        client.set_model_version_tag(name, version, "rlops.gate.champion", str(result.champion))
        reasons = "; ".join(result.reasons) or "all checks passed"
        client.set_model_version_tag(name, version, "rlops.gate.reasons", reasons[:4900])
    return run_id


def audit_gate(result: GateResult, model_name: str, version: str | None = None, candidate_uri: str = "") -> Any:
    """Record the verdict as a ``gate`` audit event of ``model_name`` (a failed candidate is never
    registered, so the event names its model URI instead of a version)."""
    reason = "; ".join(result.reasons) or "all checks passed"
    return record_event(AuditEvent(
        "gate", model_name, version, decision="passed" if result.passed else "failed", reason=reason,
        metrics=result.metrics(),
        details={"candidate": result.candidate, "candidate_uri": candidate_uri, "champion": result.champion,
                 "policy": result.policy, "summary": result.summary,
                 "checks": [dataclasses.asdict(c) for c in result.checks]}))
