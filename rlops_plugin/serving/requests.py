"""Parsing decision requests (KServe v1 and v2) into arrays, with errors that name the field.

v1 body: ``{"instances": [obs, ...]}`` where each instance is a list of numbers or an object
``{"obs": [...], "mask": [...], "episode_id": ..., "step": ..., "routing_key": ..., "context": {...}}``.
v2 inputs: ``obs`` (FP32/FP64 ``[n, obs_dim]``), optional ``mask`` (BOOL ``[n, n_actions]``),
``routing_key`` and ``episode_id`` (BYTES ``[n]``), ``step`` (INT ``[n]``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlops_plugin.bundle.strict import check_keys
from rlops_plugin.errors import InvalidObservationError

INSTANCE_FIELDS = {"obs", "mask", "episode_id", "step", "routing_key", "context"}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
V2_INPUTS = {"obs", "mask", "routing_key", "episode_id", "step"}


@dataclass
class DecisionRequest:
    """Validated observations and per-row request data."""

    obs: np.ndarray
    masks: np.ndarray | None = None
    episode_ids: list[str | None] | None = None
    steps: list[int | None] | None = None
    routing_keys: list[str | None] | None = None
    contexts: list[dict[str, Any]] | None = None

    @property
    def n(self) -> int:
        """Number of observations."""
        return int(self.obs.shape[0])


def parse_v1(body: Any, obs_dim: int, n_actions: int | None, max_batch: int) -> DecisionRequest:
    """Validate a v1 ``instances`` payload."""
    if isinstance(body, (bytes, str)):
        raise InvalidObservationError("request body must be JSON (Content-Type: application/json)")
    if not isinstance(body, Mapping):
        raise InvalidObservationError(f"request body must be a JSON object, got {type(body).__name__}")
    check_keys(body, ("instances", "parameters"), "request body", InvalidObservationError, noun="top-level fields")
    instances = body.get("instances")
    if not isinstance(instances, list):
        raise InvalidObservationError("instances: required list of observations")
    _check_batch(len(instances), max_batch, "instances")
    if all(isinstance(item, list) for item in instances):
        return DecisionRequest(obs=_obs_matrix(instances, obs_dim, "instances"))
    rows, masks, episodes, steps, keys, contexts = [], [], [], [], [], []
    any_mask = any_episode = any_step = any_key = any_context = False
    for i, item in enumerate(instances):
        where = f"instances[{i}]"
        if isinstance(item, list):
            rows.append(item)
            masks.append(None)
            episodes.append(None)
            steps.append(None)
            keys.append(None)
            contexts.append({})
            continue
        if not isinstance(item, Mapping):
            raise InvalidObservationError(f"{where}: must be a list of numbers or an object with 'obs'")
        check_keys(item, INSTANCE_FIELDS, where, InvalidObservationError, required=("obs",))
        rows.append(item["obs"])
        mask = item.get("mask")
        if mask is not None:
            any_mask = True
            masks.append(_mask_row(mask, n_actions, f"{where}.mask"))
        else:
            masks.append(None)
        episode = item.get("episode_id")
        if episode is not None and (isinstance(episode, bool) or not isinstance(episode, (str, int))):
            raise InvalidObservationError(f"{where}.episode_id: string or integer expected")
        any_episode |= episode is not None
        episodes.append(None if episode is None else str(episode))
        step = item.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise InvalidObservationError(f"{where}.step: non-negative integer expected")
        any_step |= step is not None
        steps.append(step)
        key = item.get("routing_key")
        if key is not None and not isinstance(key, str):
            raise InvalidObservationError(f"{where}.routing_key: string expected")
        any_key |= key is not None
        keys.append(key)
        context = item.get("context")
        if context is not None and not isinstance(context, Mapping):
            raise InvalidObservationError(f"{where}.context: object expected")
        any_context |= context is not None
        contexts.append(dict(context or {}))
    obs = _obs_matrix(rows, obs_dim, "instances", suffix=".obs")
    mask_array = None
    if any_mask:
        full = np.ones((len(rows), int(n_actions or 0)), dtype=bool)
        for i, m in enumerate(masks):
            if m is not None:
                full[i] = m
        mask_array = full
    return DecisionRequest(obs=obs, masks=mask_array, episode_ids=episodes if any_episode else None,
                           steps=steps if any_step else None, routing_keys=keys if any_key else None,
                           contexts=contexts if any_context else None)


def parse_v2(request: Any, obs_dim: int, n_actions: int | None, max_batch: int) -> DecisionRequest:
    """Validate a v2 ``InferRequest``."""
    inputs = {inp.name: inp for inp in request.inputs}
    check_keys(inputs, V2_INPUTS, "inputs", InvalidObservationError, noun="names")
    if "obs" not in inputs:
        raise InvalidObservationError("inputs: an input named 'obs' is required")
    obs_input = inputs["obs"]
    if obs_input.datatype not in ("FP32", "FP64", "FP16", "INT32", "INT64"):
        raise InvalidObservationError(f"inputs.obs.datatype: numeric type expected, got {obs_input.datatype}")
    try:
        raw = np.array(obs_input.as_numpy(), dtype=np.float32)  # a copy: the request's buffer is read-only
    except (ValueError, TypeError) as exc:
        raise InvalidObservationError(f"inputs.obs: {exc}") from None
    if raw.ndim == 1 and raw.size == obs_dim:
        raw = raw[None, :]
    if raw.ndim != 2 or raw.shape[1] != obs_dim:
        raise InvalidObservationError(f"inputs.obs.shape: expected [n, {obs_dim}], got {list(raw.shape)}")
    _check_batch(raw.shape[0], max_batch, "inputs.obs")
    _check_finite(raw, "inputs.obs")
    n = raw.shape[0]
    req = DecisionRequest(obs=raw)
    if "mask" in inputs:
        if n_actions is None:
            raise InvalidObservationError("inputs.mask: masks apply to Discrete action spaces only")
        mask = np.asarray(inputs["mask"].as_numpy())
        if mask.shape != (n, n_actions):
            raise InvalidObservationError(f"inputs.mask.shape: expected [{n}, {n_actions}], got {list(mask.shape)}")
        req.masks = mask.astype(bool)
    for name, attr in (("routing_key", "routing_keys"), ("episode_id", "episode_ids")):
        if name in inputs:
            values = inputs[name].as_numpy().reshape(-1)
            if values.shape[0] != n:
                raise InvalidObservationError(f"inputs.{name}.shape: expected [{n}]")
            setattr(req, attr, [v.decode() if isinstance(v, bytes) else str(v) for v in values])
    if "step" in inputs:
        steps = np.asarray(inputs["step"].as_numpy()).reshape(-1)
        if steps.shape[0] != n or (steps < 0).any():
            raise InvalidObservationError(f"inputs.step: expected [{n}] non-negative integers")
        req.steps = [int(v) for v in steps]
    return req


def _check_batch(n: int, max_batch: int, where: str) -> None:
    if n == 0:
        raise InvalidObservationError(f"{where}: empty batch")
    if n > max_batch:
        raise InvalidObservationError(f"{where}: batch of {n} exceeds the limit of {max_batch}")


def _obs_matrix(rows: list[Any], obs_dim: int, where: str, suffix: str = "") -> np.ndarray:
    try:  # fast path: numbers only (numpy would parse "0.5" and cast true to 1.0 if asked for float32)
        raw = np.asarray(rows)
        if raw.ndim == 2 and raw.shape[1] == obs_dim and raw.dtype.kind in "iuf":
            arr = raw.astype(np.float32)
            _check_finite(arr, where, suffix)
            return arr
    except (ValueError, TypeError):
        pass
    for i, row in enumerate(rows):
        field = f"{where}[{i}]{suffix}"
        if not isinstance(row, list):
            raise InvalidObservationError(f"{field}: list of {obs_dim} numbers expected")
        if len(row) != obs_dim:
            raise InvalidObservationError(f"{field}: expected {obs_dim} numbers, got {len(row)}")
        for j, v in enumerate(row):
            if v is None:
                raise InvalidObservationError(f"{field}[{j}]: null is not a number")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidObservationError(f"{field}[{j}]: {type(v).__name__} is not a number")
            if not math.isfinite(v):
                raise InvalidObservationError(f"{field}[{j}]: {v} is not finite")
            if abs(v) > _FLOAT32_MAX:
                raise InvalidObservationError(f"{field}[{j}]: {v} is outside the float32 range")
    raise InvalidObservationError(f"{where}: could not read observations")


def _check_finite(arr: np.ndarray, where: str, suffix: str = "") -> None:
    if not np.isfinite(arr).all():
        i, j = np.argwhere(~np.isfinite(arr))[0]
        raise InvalidObservationError(f"{where}[{i}]{suffix}[{j}]: {arr[i, j]} is not finite")


def _mask_row(mask: Any, n_actions: int | None, where: str) -> np.ndarray:
    if n_actions is None:
        raise InvalidObservationError(f"{where}: masks apply to Discrete action spaces only")
    if not isinstance(mask, list) or len(mask) != n_actions:
        raise InvalidObservationError(f"{where}: list of {n_actions} booleans expected")
    if not all(isinstance(v, bool) or v in (0, 1) for v in mask):
        raise InvalidObservationError(f"{where}: entries must be true/false (or 1/0)")
    return np.asarray(mask, dtype=bool)
