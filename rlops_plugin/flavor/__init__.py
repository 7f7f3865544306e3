"""The ``rlops`` MLflow flavor (this module is the MLmodel ``loader_module``)."""

from rlops_plugin.flavor.model import (
    FLAVOR_NAME,
    LOADER_MODULE,
    FlavorKey,
    LoadedModel,
    RLOpsPyfuncModel,
    _load_pyfunc,
    as_loaded,
    get_default_conda_env,
    get_default_pip_requirements,
    infer_signature_for,
    load_local_model,
    load_model,
    load_model_with_source,
    log_model,
    read_flavor_config,
    save_model,
)
from rlops_plugin.flavor.refs import ModelRef
from rlops_plugin.flavor.registry import (
    describe_version,
    get_alias_version,
    lineage_tags,
    promote,
    register_bundle,
    resolve_model_uri,
    rollback,
    set_alias,
    tag_model_version,
)

__all__ = [
    "FLAVOR_NAME", "LOADER_MODULE", "FlavorKey", "LoadedModel", "ModelRef", "as_loaded", "RLOpsPyfuncModel",
    "_load_pyfunc",
    "describe_version", "get_alias_version", "get_default_conda_env",
    "get_default_pip_requirements", "infer_signature_for", "lineage_tags", "load_local_model",
    "load_model", "load_model_with_source", "log_model", "promote", "read_flavor_config",
    "register_bundle", "resolve_model_uri", "rollback", "save_model", "set_alias",
    "tag_model_version",
]
