"""Typed errors raised by rlops.

Every error the plugin raises on purpose derives from :class:`RLOpsError`, so callers can
catch one type; the subclasses say what went wrong. At the edges they are mapped to the
host framework's error types (``MlflowException`` for MLflow, ``InvalidInput`` for KServe).
"""

from __future__ import annotations


class RLOpsError(Exception):
    """Base class of every error raised by rlops on purpose."""


class ConfigError(RLOpsError, ValueError):
    """A spec, config or argument is invalid; the message names the field and the fix."""


class PluginError(RLOpsError):
    """A plugin is missing, misbehaves, or registers a name twice."""


class IntegrityError(RLOpsError):
    """A file's or spec's content hash differs from the hash recorded for it."""


class UnsafeArtifactError(RLOpsError):
    """An artifact asks for something rlops never does: unpickling, foreign code, path escape."""


class SpaceMismatchError(ConfigError):
    """Observation or action spaces of two things that must agree do not."""


class InvalidObservationError(RLOpsError, ValueError):
    """An observation, mask or request field sent for a decision is malformed."""


class RegistryError(RLOpsError):
    """A registered model, version or alias is missing or cannot be updated as asked."""


def to_mlflow_exception(err: RLOpsError):
    """Map an rlops error to an ``MlflowException`` with a fitting error code."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        INVALID_PARAMETER_VALUE,
        INVALID_STATE,
        RESOURCE_DOES_NOT_EXIST,
    )

    if isinstance(err, (ConfigError, InvalidObservationError)):
        code = INVALID_PARAMETER_VALUE
    elif isinstance(err, RegistryError):
        code = RESOURCE_DOES_NOT_EXIST
    else:
        code = INVALID_STATE
    return MlflowException(f"{type(err).__name__}: {err}", error_code=code)


class BrokenPolicyError(RLOpsError):
    """A policy's outputs are not finite (NaN or inf): refused at load, or no safe fallback for a decision."""
