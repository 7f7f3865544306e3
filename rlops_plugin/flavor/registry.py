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


TAG_ALIAS_MOVE = "rlops.alias_move"
"""Registered-model tag holding alias moves in flight (JSON ``[[alias, version], ...]``): a write-ahead record."""


def promote(name: str, version: str | int, alias: str = "champion",
            previous_alias: str = "previous") -> str | None:
    """Move ``alias`` to ``version``, keeping the old target as ``previous_alias``; idempotent and re-runnable.

    The two alias writes cannot be one transaction, so the intended moves are written first as one tag
    (:data:`TAG_ALIAS_MOVE`), then applied, then the tag is cleared. A crash in between (MLflow killed)
    leaves the tag: the next ``promote``, ``rollback`` or :func:`complete_alias_moves` finishes the move,
    so ``previous`` never stays equal to ``champion``. Re-running a finished promotion changes nothing.
    Returns the version that was replaced (``None`` if the alias was unset).
    """
    complete_alias_moves(name)
    old = get_alias_version(name, alias)
    if old == str(version):
        return get_alias_version(name, previous_alias)
    _move_aliases(name, ([(previous_alias, old)] if old is not None else []) + [(alias, str(version))])
    return old


def rollback(name: str, alias: str = "champion", previous_alias: str = "previous") -> str:
    """Point ``alias`` back at ``previous_alias``'s version (and ``previous_alias`` at the replaced one)."""
    complete_alias_moves(name)
    previous = get_alias_version(name, previous_alias)
    if previous is None:
        raise RegistryError(f"{name} has no {previous_alias!r} alias to roll back to")
    current = get_alias_version(name, alias)
    if current == previous:
        raise RegistryError(f"{name}@{alias} and @{previous_alias} are both version {previous}: "
                            "nothing to roll back to")
    _move_aliases(name, [(alias, previous)] + ([(previous_alias, current)] if current is not None else []))
    return previous


def complete_alias_moves(name: str) -> list[tuple[str, str]]:
    """Finish alias moves a crashed ``promote``/``rollback`` left half done; return the moves re-applied."""
    import json

    pending = (client().get_registered_model(name).tags or {}).get(TAG_ALIAS_MOVE)
    if not pending:
        return []
    moves = [(str(a), str(v)) for a, v in json.loads(pending)]
    _apply(name, moves)
    return moves


def _move_aliases(name: str, moves: list[tuple[str, str]]) -> None:
    """Record ``moves`` as the write-ahead tag, apply them in order, then clear the tag."""
    import json

    client().set_registered_model_tag(name, TAG_ALIAS_MOVE, json.dumps(moves))
    _apply(name, moves)


def _apply(name: str, moves: list[tuple[str, str]]) -> None:
    for alias, version in moves:  # each write is idempotent: re-applying after a crash is safe
        client().set_registered_model_alias(name, alias, version)
    client().delete_registered_model_tag(name, TAG_ALIAS_MOVE)


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
