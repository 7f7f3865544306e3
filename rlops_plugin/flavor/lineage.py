"""Lineage of a model version in the registry's words: ``rlops.*`` tags, labels and the description.

Tags put the three hashes and the lineage where the MLflow registry UI shows them; the
description says in words what a version is.
"""

from __future__ import annotations

from typing import Any

from rlops_plugin import plugins
from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.errors import PluginError
from rlops_plugin.flavor.refs import client

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


def describe_version(bundle: PolicyBundle) -> str:
    """A paragraph for the registry UI: env, reward, policy, parent and data."""
    hashes = bundle.hashes()
    lineage = bundle.lineage
    lines = _part_lines(bundle)
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


def _part_lines(bundle: PolicyBundle) -> list[str]:
    """What the three parts are: the kind's own words (``describe_version(bundle)``), else a network's."""
    kind = _registered_kind(bundle.kind)
    if kind is not None and callable(getattr(kind, "describe_version", None)):
        return list(kind.describe_version(bundle))
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
    return lines


def _registered_kind(name: str) -> Any:
    """The registered policy kind ``name``, or ``None`` (a description never fails on a plugin lookup)."""
    try:
        return plugins.policy_kinds().get(name).value
    except PluginError:
        return None


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


