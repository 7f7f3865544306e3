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
    if kind == "TrainJob":
        validate_trainjob(manifest)
        return
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


def validate_trainer_model(value: Any, model: Any, path: str = "$") -> None:
    """Check ``value`` (plain JSON) against a ``kubeflow_trainer_api`` pydantic model, strictly.

    The SDK's ``from_dict`` drops unknown keys and pydantic ignores extras, so this walks the model's fields by
    their JSON names: an unknown or missing required field, a wrong type or a malformed quantity names its path.
    """
    from pydantic import BaseModel

    if not isinstance(model, type) or not issubclass(model, BaseModel):
        _check_annotation(value, model, path)
        return
    if "actual_instance" in model.model_fields:  # oneOf wrappers: IntOrString, Quantity
        _check_one_of(value, model, path)
        return
    if not isinstance(value, dict):
        raise ManifestError(f"{path}: expected an object ({model.__name__}), got {type(value).__name__}")
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    for key, item in value.items():
        if key not in fields:
            raise ManifestError(f"{path}.{key}: unknown field for {model.__name__} (known: {sorted(fields)})")
        _check_annotation(item, fields[key].annotation, f"{path}.{key}")
    missing = sorted(key for key, f in fields.items() if f.is_required() and value.get(key) is None)
    if missing:
        raise ManifestError(f"{path}: {model.__name__} requires {missing}")


def _check_annotation(value: Any, annotation: Any, path: str) -> None:
    import types
    import typing

    from pydantic import BaseModel, TypeAdapter, ValidationError

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            _check_annotation(value, options[0], path)
            return
    elif origin in (list, typing.List):  # noqa: UP006 - the generated models annotate with typing.List
        if not isinstance(value, list):
            raise ManifestError(f"{path}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            _check_annotation(item, args[0], f"{path}[{i}]")
        return
    elif origin in (dict, typing.Dict):  # noqa: UP006
        if not isinstance(value, dict):
            raise ManifestError(f"{path}: expected a map, got {type(value).__name__}")
        for key, item in value.items():
            _check_annotation(item, args[1], f"{path}.{key}")
        return
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        validate_trainer_model(value, annotation, path)
        return
    try:
        TypeAdapter(annotation).validate_python(value)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"] if exc.errors() else str(exc)
        raise ManifestError(f"{path}: {problem}, got {type(value).__name__} {value!r}") from None


def _check_one_of(value: Any, model: Any, path: str) -> None:
    import json

    try:
        model.from_json(json.dumps(value))
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ManifestError(f"{path}: {value!r} is not a valid {model.__name__} ({first})") from None
    if "Quantity" in model.__name__:
        from kubernetes.utils import parse_quantity

        try:
            parse_quantity(value)
        except ValueError as exc:
            raise ManifestError(f"{path}: {value!r} is not a Kubernetes quantity ({exc})") from None


def validate_trainjob(manifest: dict[str, Any]) -> None:
    """Validate a Kubeflow Trainer ``TrainJob`` against ``kubeflow_trainer_api``'s models (unknown fields fail)."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    if manifest.get("apiVersion") != "trainer.kubeflow.org/v1alpha1" or manifest.get("kind") != "TrainJob":
        raise ManifestError(f"$: expected apiVersion trainer.kubeflow.org/v1alpha1 and kind TrainJob, got "
                            f"{manifest.get('apiVersion')!r} {manifest.get('kind')!r}")
    validate_trainer_model(manifest, TrainerV1alpha1TrainJob)
    if not (manifest.get("metadata") or {}).get("name"):
        raise ManifestError("$.metadata.name: a TrainJob needs a name")
    if "spec" not in manifest:
        raise ManifestError("$.spec: a TrainJob needs a spec (runtimeRef at least)")
