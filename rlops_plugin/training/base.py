"""The trainer contract, config handling, and the training loop the built-in trainers share.

:class:`Trainer` is the contract a plugin registers (``Config``, ``data_kind``, ``train``).
:class:`GradientTrainer` owns the offline loop (d3rlpy style): checks, seeding, torch threads, the
Adam optimizer, mini-batch sampling, metric history and progress; a subclass writes only
:meth:`~GradientTrainer.setup`, :meth:`~GradientTrainer.update` and, if needed,
:meth:`~GradientTrainer.finish`. :class:`TrainingRun` is the seeded, recorded run state that loops
of another shape (PPO's rollouts) use directly.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from rlops_plugin.bundle.bundle import PolicyBundle
from rlops_plugin.bundle.policy import Policy
from rlops_plugin.errors import ConfigError
from rlops_plugin.experience.dataset import Dataset
from rlops_plugin.local.threads import torch_threads
from rlops_plugin.training import distributed

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
    ``description``, and implement :meth:`train`, which must start from ``init.policy`` (and leave
    it unchanged). A trainer of gradient steps on a dataset subclasses :class:`GradientTrainer`
    instead and writes only the update step. ``rlops_plugin.testing.check_trainer`` checks the contract.
    """

    Config: ClassVar[type]
    data_kind: ClassVar[str]
    description: ClassVar[str] = ""
    logged_metrics: ClassVar[tuple[str, ...]] = ()
    """Metrics :meth:`train` reports through ``progress`` while it runs (what a search space may prune on)."""

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
    """The docstring written under each dataclass field (for ``rlops train --help-trainer``), inherited ones too."""
    docs: dict[str, str] = {}
    for cls in reversed([c for c in config_cls.__mro__ if dataclasses.is_dataclass(c)]):
        source = textwrap.dedent(inspect.getsource(cls))
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
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


@dataclass
class TrainingRun:
    """A run's shared state: the seeded numpy generator, the last metrics and their recorded history.

    :meth:`start` seeds torch (networks built afterwards are reproducible) and returns the run;
    :meth:`record` keeps the metrics of each step, appends them to the history every ``every``
    steps and on the last, and tells ``progress``; :meth:`result` packs the final policy.
    """

    rng: np.random.Generator
    total: int
    progress: Progress | None = None
    every: int = 100
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    @classmethod
    def start(cls, seed: int, total: int, progress: Progress | None = None, every: int = 100) -> TrainingRun:
        """Seed torch and numpy from ``seed`` and begin a run of ``total`` steps."""
        return cls(seed_everything(seed), total, progress, every)

    def record(self, step: int, metrics: dict[str, float]) -> None:
        """Keep ``metrics`` as the latest; record and report them on every ``every``-th and the last step."""
        self.metrics = metrics
        report(self.progress, step, self.total, metrics, self.history, self.every)

    def result(self, policy: Policy) -> TrainResult:
        """The trained policy (switched to eval mode) with the last metrics and the history."""
        policy.eval()
        return TrainResult(policy, self.metrics, self.history)


class GradientTrainer(Trainer):
    """A trainer of ``config.steps`` gradient steps on mini-batches of a dataset; it owns the loop.

    :meth:`train` checks the config's fields and the dataset kind, calls :meth:`check`, seeds
    (:class:`TrainingRun`), calls :meth:`setup` for the policy to train, samples
    ``config.batch_size`` rows of :meth:`columns` per step (with replacement), calls :meth:`update`
    under ``config.torch_threads`` threads and records its metrics every ``report_every`` steps,
    then returns :meth:`finish`'s policy. The config needs ``steps``, ``batch_size``, ``lr``,
    ``seed`` and ``torch_threads`` fields.

    Under torchrun (:mod:`~rlops_plugin.training.distributed`) each rank samples
    ``ceil(batch_size / world)`` rows per step from its own shard of the rows (every ``world``-th row,
    with a generator seeded by ``(seed, rank)``), so the effective batch is the single-process one; the
    networks (:meth:`networks`) start from rank 0's state, gradients are averaged over ranks before
    clipping and the step, recorded metrics are averaged over ranks, and every rank ends with the same
    weights (checked). Outside torchrun none of this runs: results are those of a single process.

    Subclasses implement :meth:`columns` and :meth:`update` (compute a loss, call :meth:`optimize`,
    return metrics), and where needed :meth:`check` (refuse an init or config early),
    :meth:`setup` (by default a clone of ``init.policy`` in train mode; build extra networks here),
    :meth:`parameters` (what Adam optimizes; by default the policy network) and :meth:`finish`
    (turn the trained networks into the exported policy). During a run ``self.config``,
    ``self.policy`` and ``self.optimizer`` are set.
    """

    report_every: ClassVar[int] = 100
    """Steps between recorded metrics (the last step is always recorded)."""
    REQUIRED_FIELDS: ClassVar[tuple[str, ...]] = ("steps", "batch_size", "lr", "seed", "torch_threads")

    config: Any
    policy: Policy
    optimizer: torch.optim.Optimizer

    def train(self, init: PolicyBundle, data: Dataset | None, config: Any,
              progress: Progress | None = None) -> TrainResult:
        """Run the loop described in the class docstring; deterministic given ``config.seed``."""
        missing = [name for name in self.REQUIRED_FIELDS if not hasattr(config, name)]
        if missing:
            raise ConfigError(f"{type(self).__name__}: its Config needs the fields {missing} of a GradientTrainer")
        data = require_data(data, self.data_kind)
        self.check(init, config)
        self.config = config
        dist = distributed.init()
        run = TrainingRun.start(config.seed, config.steps, progress, self.report_every)
        self.policy = self.setup(init, config)
        columns, rng, batch_size = self.columns(data, config), run.rng, config.batch_size
        if dist.distributed:
            columns = distributed.shard_rows(columns, dist.rank, dist.world_size)
            rng = distributed.rank_rng(config.seed)
            batch_size = distributed.per_rank(config.batch_size, dist.world_size)
            distributed.broadcast_state(self.networks())
        batches = Batches(columns, rng)
        self.optimizer = self.make_optimizer(self.parameters(), config)
        with torch_threads(config.torch_threads):
            for step in range(1, config.steps + 1):
                metrics = self.update(batches.sample(batch_size))
                if dist.distributed and (step % self.report_every == 0 or step == config.steps):
                    metrics = distributed.reduce_metrics(metrics)
                run.record(step, metrics)
        distributed.check_in_sync(self.networks(), f"{type(self).__name__} networks")
        return run.result(self.finish(self.policy))

    def check(self, init: PolicyBundle, config: Any) -> None:
        """Raise ``ConfigError`` for an init policy or config this trainer cannot train (before seeding)."""

    def setup(self, init: PolicyBundle, config: Any) -> Policy:
        """The policy to train: a copy of ``init.policy`` in train mode (build other networks here too)."""
        policy = init.policy.clone()
        policy.train()
        return policy

    def columns(self, data: Dataset, config: Any) -> dict[str, np.ndarray]:
        """The dataset columns mini-batches are drawn from (keys of the batch :meth:`update` gets)."""
        raise NotImplementedError

    def parameters(self) -> Iterable[nn.Parameter]:
        """What the optimizer updates: the policy network's parameters."""
        return self.policy.network.parameters()

    def networks(self) -> list[nn.Module]:
        """Every network of the run (the policy's and any ``nn.Module`` a subclass keeps as an attribute, e.g.
        CQL's target): what ranks start identical from and are checked identical on at the end."""
        return [self.policy.network, *(v for v in vars(self).values() if isinstance(v, nn.Module))]

    def make_optimizer(self, parameters: Iterable[nn.Parameter], config: Any) -> torch.optim.Optimizer:
        """Adam with ``config.lr``."""
        return torch.optim.Adam(parameters, lr=config.lr)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step on ``batch``; return its metrics (``train/...`` names, floats)."""
        raise NotImplementedError

    def optimize(self, loss: torch.Tensor, max_grad_norm: float | None = None) -> None:
        """Back-propagate ``loss``, average the gradients over ranks (under torchrun), clip their norm when
        given, and step the optimizer."""
        self.optimizer.zero_grad()
        loss.backward()
        distributed.average_gradients(p for group in self.optimizer.param_groups for p in group["params"])
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_([p for group in self.optimizer.param_groups for p in group["params"]],
                                     max_grad_norm)
        self.optimizer.step()

    def finish(self, policy: Policy) -> Policy:
        """The policy to return once the steps are done (by default the trained one itself)."""
        return policy
