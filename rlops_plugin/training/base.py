"""The trainer contract, config handling and the mini-batch sampler the built-in trainers share."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.policy import Policy
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.dataset import Dataset

Progress = Callable[[int, int, dict[str, float]], None]
DATA_KINDS = ("transitions", "preferences", "simulator")


@dataclass
class TrainResult:
    """What a trainer returns: the new policy, final metrics and a metric history."""

    policy: Policy
    metrics: dict[str, float]
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    """``(step, {metric: value})`` pairs, logged to MLflow with their step."""


class Trainer:
    """Base class of trainers registered through ``rlops_register_trainers``.

    Subclasses set ``Config`` (a dataclass with a docstring per field), ``data_kind`` and
    ``description``, and implement :meth:`train`, which must start from ``init.policy``.
    """

    Config: ClassVar[type]
    data_kind: ClassVar[str]
    description: ClassVar[str] = ""

    def train(self, init: PolicyBundle, data: Dataset | None, config: Any,
              progress: Progress | None = None) -> TrainResult:
        """Return a policy trained from ``init.policy`` on ``data`` (or in the simulator)."""
        raise NotImplementedError


def make_config(config_cls: type, values: dict[str, Any] | None = None) -> Any:
    """Build a trainer config from a dict (strings from the CLI are converted); unknown keys fail."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    values = dict(values or {})
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"{config_cls.__name__}: unknown fields {sorted(unknown)}; known: {sorted(fields)}")
    converted = {}
    for name, raw in values.items():
        default = getattr(config_cls(), name)
        converted[name] = _convert(raw, default, f"{config_cls.__name__}.{name}")
    try:
        return config_cls(**converted)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{config_cls.__name__}: {exc}") from exc


def _convert(raw: Any, default: Any, where: str) -> Any:
    if not isinstance(raw, str) or isinstance(default, str):
        return raw
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, (list, dict)) or default is None:
            import json

            return json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: cannot read {raw!r} as {type(default).__name__}") from exc
    return raw


def field_docs(config_cls: type) -> dict[str, str]:
    """The docstring written under each dataclass field (for ``rlops train --help-trainer``)."""
    source = textwrap.dedent(inspect.getsource(config_cls))
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
            docs[node.target.id] = str(nxt.value.value).strip()
    return docs


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-able dict of a config dataclass."""
    return dataclasses.asdict(config)


def require_data(data: Dataset | None, kind: str) -> Dataset:
    """The dataset a trainer needs, or a ``ConfigError`` naming the missing kind."""
    if data is None or data.kind != kind:
        got = "no dataset" if data is None else f"a {data.kind} dataset"
        raise ConfigError(f"this trainer needs a {kind} dataset, got {got}")
    return data


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch and return a numpy generator: trainers are deterministic given their seed."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


class Batches:
    """Uniform mini-batches of dataset columns as tensors (with replacement)."""

    def __init__(self, columns: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        self.tensors = {k: torch.as_tensor(np.array(v)) for k, v in columns.items() if v.dtype != object}
        self.n = len(next(iter(self.tensors.values())))
        self.rng = rng

    def sample(self, size: int) -> dict[str, torch.Tensor]:
        """One mini-batch of ``size`` rows."""
        idx = torch.from_numpy(self.rng.integers(0, self.n, size=size))
        return {k: v[idx] for k, v in self.tensors.items()}


def report(progress: Progress | None, step: int, total: int, metrics: dict[str, float],
           history: list[tuple[int, dict[str, float]]], every: int = 100) -> None:
    """Record metrics every ``every`` steps and on the last step; tell the progress callback."""
    if step % every == 0 or step == total:
        history.append((step, dict(metrics)))
        if progress is not None:
            progress(step, total, metrics)
