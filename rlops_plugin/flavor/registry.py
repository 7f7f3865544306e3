"""Registry helpers: register bundles with lineage tags, readable descriptions, and aliases.

Tags put the three hashes and the lineage where the MLflow registry UI shows them; the
description says in words what a version is. Aliases (``champion``, ``challenger``,
``shadow``, ``previous``) are moved with one ``set_registered_model_alias`` call each, which
MLflow applies atomically, so an alias is never missing while it moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.errors import RegistryError

TAG_BUNDLE_SHA = "rlops.bundle_sha"
TAG_POLICY_SHA = "rlops.policy_sha"
TAG_ENV_SHA = "rlops.env_sha"
TAG_REWARD_SHA = "rlops.reward_sha"
TAG_ENV_ID = "rlops.env_id"
TAG_REWARD_REF = "rlops.reward_ref"
TAG_PARENT_VERSION = "rlops.parent_version"
TAG_DATASET_DIGEST = "rlops.dataset_digest"
TAG_TRAINER = "rlops.trainer"
TAG_CALIBRATION = "rlops.calibration"
TAG_ARCHITECTURE = "rlops.architecture"
ALIASES = ("champion", "challenger", "shadow", "previous")


@dataclass(frozen=True)
class ResolvedModelUri:
    """A model URI pinned to what it pointed to when resolved."""

    download_uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def client():
    """An ``MlflowClient`` for the current tracking and registry URIs."""
    from mlflow import MlflowClient

    return MlflowClient()


def resolve_model_uri(model_uri: str) -> ResolvedModelUri:
    """Pin ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` to one version; pass others through.

    Resolving first, then downloading ``models:/NAME/VERSION``, means the loaded artifact and
    the version we report can't disagree even if the alias moves during the download.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.utils.models import _parse_model_uri

    if not model_uri.startswith("models:/"):
        return ResolvedModelUri(model_uri)
    try:
        parsed = _parse_model_uri(model_uri)
    except MlflowException as exc:
        raise RegistryError(str(exc)) from exc
    if parsed.model_id is not None:
        return ResolvedModelUri(model_uri)
    if parsed.version is None and parsed.alias is None:
        raise RegistryError(f"{model_uri}: stages and 'latest' are ambiguous; use models:/NAME/VERSION "
                            "or models:/NAME@ALIAS")
    mlflow_client = client()
    try:
        if parsed.alias is not None:
            mv = mlflow_client.get_model_version_by_alias(parsed.name, parsed.alias)
        else:
            mv = mlflow_client.get_model_version(parsed.name, str(parsed.version))
    except MlflowException as exc:
        raise RegistryError(f"{model_uri}: {exc.message}") from exc
    return ResolvedModelUri(f"models:/{parsed.name}/{mv.version}", parsed.name, str(mv.version),
                            parsed.alias, dict(mv.tags or {}))


def describe_version(bundle: PolicyBundle) -> str:
    """A paragraph for the registry UI: env, reward, policy, parent and data."""
    hashes = bundle.hashes()
    lineage = bundle.lineage
    policy = bundle.policy.describe()
    env = bundle.env_spec
    reward = bundle.reward_spec
    lines = [
        f"Policy for environment **{env.name}** ({policy['architecture']} network, "
        f"action space {policy['action_space']['type']}).",
        f"Reward: `{reward.ref}` with params {dict(reward.params) or '{}'} "
        f"(source sha256 {reward.source_sha256[:12]}).",
    ]
    if env.params or env.randomization:
        lines.append(f"Env parameters {dict(env.params)}, randomized {sorted(env.randomization)}.")
    if lineage.get("parent_version"):
        lines.append(f"Trained from version {lineage['parent_version']} "
                     f"(bundle {str(lineage.get('parent_bundle_sha', ''))[:12]}) by trainer "
                     f"`{trainer_label(lineage)}` on dataset "
                     f"{lineage.get('dataset_digest') or 'none (simulator)'}.")
    elif lineage.get("trainer"):
        lines.append(f"Trained from scratch by trainer `{trainer_label(lineage)}` on dataset "
                     f"{lineage.get('dataset_digest') or 'none (simulator)'}.")
    else:
        lines.append("Initial version (no parent).")
    if lineage.get("calibration"):
        lines.append(f"Simulator calibrated from production logs: {calibration_label(lineage['calibration'])}.")
    lines.append(f"Bundle sha256 {hashes['bundle']}.")
    return "\n\n".join(lines)


def trainer_label(lineage: Any) -> str:
    """``cql`` for one update, ``cql+sim_finetune`` for a chained one."""
    chain = lineage.get("trainer_chain") or [lineage.get("trainer") or "unknown"]
    return "+".join(str(t) for t in chain)


def calibration_label(calibration: Any) -> str:
    """``masscart=2.501±0.0002 (n=1000, rmse 1.04 -> 3e-06)``: the fitted physics a policy trained on."""
    std = calibration.get("std") or {}
    fitted = ", ".join(f"{k}={float(v):.4g}±{float(std.get(k, float('nan'))):.2g}"
                       for k, v in (calibration.get("params") or {}).items())
    return (f"{fitted} (n={calibration.get('transitions')}, rmse {float(calibration.get('rmse_prior', 'nan')):.3g}"
            f" -> {float(calibration.get('rmse_fit', 'nan')):.3g})")


def lineage_tags(bundle: PolicyBundle) -> dict[str, str]:
    """The ``rlops.*`` tags for a model version of ``bundle``."""
    hashes = bundle.hashes()
    tags = {
        TAG_BUNDLE_SHA: hashes["bundle"],
        TAG_POLICY_SHA: hashes["policy"],
        TAG_ENV_SHA: hashes["env"],
        TAG_REWARD_SHA: hashes["reward"],
        TAG_ENV_ID: bundle.env_spec.name,
        TAG_REWARD_REF: bundle.reward_spec.ref,
        TAG_ARCHITECTURE: bundle.policy.architecture,
        TAG_PARENT_VERSION: str(bundle.lineage.get("parent_version") or ""),
    }
    if bundle.lineage.get("dataset_digest"):
        tags[TAG_DATASET_DIGEST] = str(bundle.lineage["dataset_digest"])
    if bundle.lineage.get("trainer"):
        tags[TAG_TRAINER] = trainer_label(bundle.lineage)
    if bundle.lineage.get("calibration"):
        tags[TAG_CALIBRATION] = calibration_label(bundle.lineage["calibration"])
    return tags


def tag_model_version(name: str, version: str, bundle: PolicyBundle,
                      extra_tags: dict[str, Any] | None = None) -> None:
    """Set lineage tags and the description on an existing model version."""
    mlflow_client = client()
    for key, value in {**lineage_tags(bundle), **(extra_tags or {})}.items():
        mlflow_client.set_model_version_tag(name, version, key, str(value))
    mlflow_client.update_model_version(name, version, description=describe_version(bundle))


def register_bundle(model_uri: str, name: str, bundle: PolicyBundle | None = None,
                    extra_tags: dict[str, Any] | None = None, await_registration_for: int = 300):
    """Register a logged rlops model under ``name`` with lineage tags; return the ModelVersion."""
    import mlflow

    from rlops_plugin.flavor.model import load_model

    bundle = bundle if bundle is not None else load_model(model_uri)
    mv = mlflow.register_model(model_uri, name, await_registration_for=await_registration_for,
                               tags=lineage_tags(bundle))
    tag_model_version(name, str(mv.version), bundle, extra_tags)
    return client().get_model_version(name, str(mv.version))


def get_alias_version(name: str, alias: str) -> str | None:
    """Version number an alias points to, or ``None`` when the alias is unset."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def set_alias(name: str, alias: str, version: str | int, expected_current: str | None = None) -> None:
    """Point ``alias`` at ``version`` in one call; with ``expected_current``, refuse if it moved."""
    if expected_current is not None:
        current = get_alias_version(name, alias)
        if current != expected_current:
            raise RegistryError(f"{name}@{alias} points to version {current}, expected "
                                f"{expected_current}; someone else moved it")
    client().set_registered_model_alias(name, alias, str(version))


def delete_alias(name: str, alias: str) -> None:
    """Remove an alias if set."""
    if get_alias_version(name, alias) is not None:
        client().delete_registered_model_alias(name, alias)


def promote(name: str, version: str | int, alias: str = "champion",
            previous_alias: str = "previous") -> str | None:
    """Move ``alias`` to ``version``, keeping the old target as ``previous_alias``.

    ``previous`` is written first and ``champion`` second: if the second call fails, the
    champion is still the old version (never missing), and a retry completes the move.
    Returns the version that was replaced (``None`` if the alias was unset).
    """
    old = get_alias_version(name, alias)
    if old == str(version):
        return old
    if old is not None:
        client().set_registered_model_alias(name, previous_alias, old)
    client().set_registered_model_alias(name, alias, str(version))
    return old


def rollback(name: str, alias: str = "champion", previous_alias: str = "previous") -> str:
    """Point ``alias`` back at ``previous_alias``'s version; return that version."""
    previous = get_alias_version(name, previous_alias)
    if previous is None:
        raise RegistryError(f"{name} has no {previous_alias!r} alias to roll back to")
    current = get_alias_version(name, alias)
    client().set_registered_model_alias(name, alias, previous)
    if current is not None and current != previous:
        client().set_registered_model_alias(name, previous_alias, current)
    return previous


TAG_APPROVED_BY = "rlops.approval.by"
TAG_APPROVED_AT = "rlops.approval.at"


def approve(name: str, version: str | int, actor: str, note: str = "") -> dict[str, str]:
    """Record a human approval of a version for promotion (who, when, why) as version tags."""
    import time

    mlflow_client = client()
    mlflow_client.get_model_version(name, str(version))  # fails clearly if the version does not exist
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tags = {TAG_APPROVED_BY: actor, TAG_APPROVED_AT: stamp, "rlops.approval.note": note or ""}
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, str(version), key, value)
    return tags


def approval_of(name: str, version: str | int) -> dict[str, str] | None:
    """The approval recorded on a version, or ``None``."""
    tags = client().get_model_version(name, str(version)).tags or {}
    if TAG_APPROVED_BY not in tags:
        return None
    return {"by": tags[TAG_APPROVED_BY], "at": tags.get(TAG_APPROVED_AT, ""),
            "note": tags.get("rlops.approval.note", "")}
