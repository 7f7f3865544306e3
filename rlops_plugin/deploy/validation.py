"""Validate manifests without a cluster: against the SDK-generated schemas and Kubernetes' own.

KServe's Python SDK models are generated from its CRDs' OpenAPI schemas, so walking a manifest
with their ``openapi_types`` / ``attribute_map`` checks every field name and type the CRD defines
(an unknown or misspelled field is an error, not silently dropped). Core kinds, and every
container embedded in a KServe object, are checked with ``kubernetes-validate`` (strict), which
carries the Kubernetes API's JSON schemas.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from rlops_plugin.errors import ConfigError

KUBERNETES_VERSION = "1.30.0"
_PRIMITIVES = {"str": (str,), "int": (int,), "bool": (bool,), "float": (int, float), "object": (object,),
               "datetime": (str,), "date": (str,), "ResourceQuantity": (str, int, float)}


class ManifestError(ConfigError):
    """A manifest does not match its schema: the message names the path and the problem."""


def _model_class(name: str) -> Any:
    import kubernetes.client as k8s

    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve
    finally:
        sys.argv = saved
    for module in (kserve, k8s):
        if hasattr(module, name):
            return getattr(module, name)
    raise ManifestError(f"schema type {name!r} is unknown to the kserve and kubernetes SDKs")


def validate_sdk(value: Any, type_name: str | type, path: str = "$") -> None:
    """Check ``value`` (plain JSON) against an SDK model type; raise ``ManifestError`` with the path."""
    name = type_name if isinstance(type_name, str) else type_name.__name__
    if value is None:
        return
    if name in _PRIMITIVES:
        if name in ("int", "float") and isinstance(value, bool) or not isinstance(value, _PRIMITIVES[name]):
            raise ManifestError(f"{path}: expected {name}, got {type(value).__name__} {value!r}")
        return
    match = re.fullmatch(r"list\[(.+)\]", name)
    if match:
        if not isinstance(value, list):
            raise ManifestError(f"{path}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            validate_sdk(item, match.group(1), f"{path}[{i}]")
        return
    match = re.fullmatch(r"dict\((\w+), (.+)\)", name)
    if match:
        if not isinstance(value, dict):
            raise ManifestError(f"{path}: expected a map, got {type(value).__name__}")
        for key, item in value.items():
            validate_sdk(item, match.group(2), f"{path}.{key}")
        return
    cls = _model_class(name)
    if not isinstance(value, dict):
        raise ManifestError(f"{path}: expected an object ({name}), got {type(value).__name__}")
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in by_json:
            raise ManifestError(f"{path}.{key}: unknown field for {name} (known: {sorted(by_json)})")
        validate_sdk(item, cls.openapi_types[by_json[key]], f"{path}.{key}")


def validate_core(manifest: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Validate a core Kubernetes object (strict: unknown fields fail) with kubernetes-validate."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise ManifestError(f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}: "
                            f"{'.'.join(str(p) for p in exc.path)}: {exc.message}") from exc


def _containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    spec = manifest.get("spec", {})
    if manifest["kind"] == "ServingRuntime":
        return list(spec.get("containers", []))
    if manifest["kind"] == "InferenceService":
        predictor = spec.get("predictor", {})
        out = list(predictor.get("containers", []))
        model = predictor.get("model")
        if model:
            out.append({k: v for k, v in model.items() if k not in ("modelFormat", "runtime", "storageUri",
                                                                     "protocolVersion", "storage")}
                       | {"name": model.get("name") or "kserve-container"})
        return out
    return []


def validate_manifest(manifest: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """Validate any manifest rlops generates (KServe kinds by SDK schema + containers, core kinds directly)."""
    kind = manifest.get("kind")
    if kind == "InferenceService":
        validate_sdk(manifest, "V1beta1InferenceService")
    elif kind == "ServingRuntime":
        validate_sdk(manifest, "V1alpha1ServingRuntime")
    else:
        validate_core(manifest, version)
        return
    for container in _containers(manifest):
        validate_core({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
                       "spec": {"containers": [container]}}, version)
