"""Registry helpers: register bundles with lineage tags, and move aliases.

Aliases (``champion``, ``challenger``, ``shadow``, ``previous``) are moved with one
``set_registered_model_alias`` call each, which MLflow applies atomically, so an alias is never
missing while it moves. This module sits above ``model.py`` (save/load) and imports it, never
the other way round.
"""

from __future__ import annotations

from typing import Any

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.errors import RegistryError
from rlops_plugin.flavor.lineage import (  # noqa: F401  (re-exported: the registry's tag vocabulary)
    TAG_ARCHITECTURE,
    TAG_BUNDLE_SHA,
    TAG_CALIBRATION,
    TAG_DATASET_DIGEST,
    TAG_ENV_ID,
    TAG_ENV_SHA,
    TAG_PARENT_VERSION,
    TAG_POLICY_SHA,
    TAG_REWARD_REF,
    TAG_REWARD_SHA,
    TAG_TRAINER,
    calibration_label,
    describe_version,
    lineage_tags,
    tag_model_version,
    trainer_label,
)
from rlops_plugin.flavor.model import load_model
from rlops_plugin.flavor.refs import ModelRef, ResolvedModelUri, client, resolve_model_uri  # noqa: F401

ALIASES = ("champion", "challenger", "shadow", "previous")


def register_bundle(model_uri: str, name: str, bundle: PolicyBundle | None = None,
                    extra_tags: dict[str, Any] | None = None, await_registration_for: int = 300):
    """Register a logged rlops model under ``name`` with lineage tags; return the ModelVersion."""
    import mlflow

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
