"""Data-parallel training under ``torchrun``: the process group, rank-0 duties and gradient averaging.

Every trainer runs unchanged under ``torchrun --nproc_per_node=N`` (or a Kubeflow Trainer TrainJob, whose
torch-distributed runtime starts ``torchrun`` with ``PET_NNODES``/``PET_NPROC_PER_NODE``/``PET_NODE_RANK``/
``PET_MASTER_ADDR``). torchrun gives each worker ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``
and ``GROUP_WORLD_SIZE`` (nodes); :func:`init` joins the process group they describe (gloo for CPU tensors, and
NCCL for CUDA tensors when CUDA is present) once per process. Outside torchrun every helper is a no-op that
returns the single-process answer, so single-process results stay bit-identical.

Why gradients are averaged here rather than by wrapping a module in ``DistributedDataParallel``: our trainers
optimise several networks whose forward passes are not one module's ``forward`` (CQL calls the Q-network on
observations and, without gradients, on next observations, and keeps a target copy; BC goes through
``Policy.log_prob``; PPO trains an actor and a critic). DDP's reducer hooks one module's forward and backward;
what it does with the gradients is one ``all_reduce`` of every parameter's gradient divided by the world size.
:func:`average_gradients` does exactly that, over every parameter the optimizer owns, in one flat buffer (one
collective per step, as DDP's bucketing aims for), after ``backward`` and before clipping and the step.
"""

from __future__ import annotations

import atexit
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlops_plugin.errors import RLOpsError


class DistributedError(RLOpsError):
    """A distributed run failed: a worker died, or ranks disagree where they must agree."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a torchrun job (rank 0 of world 1 outside torchrun)."""

    rank: int = 0
    """Global rank (``RANK``)."""
    world_size: int = 1
    """Processes in the job (``WORLD_SIZE``)."""
    local_rank: int = 0
    """Rank on this node (``LOCAL_RANK``): picks the CUDA device."""
    nproc_per_node: int = 1
    """Processes per node (``LOCAL_WORLD_SIZE``)."""
    nnodes: int = 1
    """Nodes (``GROUP_WORLD_SIZE``, torchrun's count of node agents)."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """Read torchrun's variables; absent ones mean a single process. Bad values raise ``DistributedError``."""
        env = os.environ if environ is None else environ
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local = int(env.get("LOCAL_RANK", "0"))
            per_node = int(env.get("LOCAL_WORLD_SIZE", str(world)))
            nodes = int(env.get("GROUP_WORLD_SIZE", str(max(1, world // max(1, per_node)))))
        except ValueError as exc:
            raise DistributedError(f"torchrun environment is not numeric: {exc}") from None
        if world < 1 or not 0 <= rank < world:
            raise DistributedError(f"RANK={rank} is outside WORLD_SIZE={world}")
        return cls(rank, world, local, per_node, nodes)

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    def params(self) -> dict[str, int]:
        """What a run records about its distribution (``distributed.*`` params)."""
        return {"distributed.world_size": self.world_size, "distributed.nproc_per_node": self.nproc_per_node,
                "distributed.nnodes": self.nnodes}


_created = False


def env() -> DistEnv:
    """This process's place: from the process group once joined, else from the environment."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        e = DistEnv.from_environ()
        return DistEnv(torch.distributed.get_rank(), torch.distributed.get_world_size(), e.local_rank,
                       e.nproc_per_node, e.nnodes)
    return DistEnv.from_environ()


def init() -> DistEnv:
    """Join torchrun's process group once (idempotent; no-op for a single process) and return :func:`env`.

    Backend: ``gloo``; with CUDA also ``nccl`` for CUDA tensors (``cpu:gloo,cuda:nccl``, collectives dispatch by
    tensor device, so CPU-tensor trainers work on a GPU node too). The group is destroyed at exit.
    """
    global _created
    here = DistEnv.from_environ()
    if not here.distributed or torch.distributed.is_initialized():
        return env()
    if not torch.distributed.is_available():
        raise DistributedError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(here.local_rank % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    torch.distributed.init_process_group(backend=backend)
    _created = True
    atexit.register(shutdown)
    return env()


def shutdown() -> None:
    """Destroy the process group if :func:`init` created it."""
    global _created
    if _created and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _created = False


def active() -> bool:
    """A process group of more than one process is joined."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def world() -> int:
    """Processes in the job (1 outside torchrun)."""
    return env().world_size


def rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return env().rank


def is_main() -> bool:
    """Global rank 0: the one process that evaluates, logs to MLflow and registers."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    if active():
        torch.distributed.barrier()


def per_rank(total: int, world_size: int | None = None) -> int:
    """This rank's share of a batch of ``total``: ``ceil(total / world)``, so the effective batch is at least
    ``total`` (equal when it divides)."""
    return math.ceil(total / (world_size or world()))


def shard_indices(n: int, rank_: int | None = None, world_size: int | None = None) -> np.ndarray:
    """Row indices of this rank's shard: every ``world``-th row from ``rank`` (disjoint, sizes differ by <= 1)."""
    r = rank() if rank_ is None else rank_
    w = world() if world_size is None else world_size
    if n < w:
        raise DistributedError(f"{n} rows cannot be sharded over {w} ranks (each rank needs at least one)")
    return np.arange(r, n, w)


def shard_rows(columns: Mapping[str, np.ndarray], rank_: int | None = None,
               world_size: int | None = None) -> dict[str, np.ndarray]:
    """``columns`` restricted to this rank's shard (:func:`shard_indices`); the columns themselves outside torchrun."""
    w = world() if world_size is None else world_size
    if w == 1:
        return dict(columns)
    n = len(next(iter(columns.values())))
    idx = shard_indices(n, rank_, w)
    return {k: v[idx] for k, v in columns.items()}


def _unique(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    seen, out = set(), []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace each parameter's gradient by its mean over ranks (what DDP's reducer does; see the module docstring).

    A parameter without a gradient on this rank contributes zeros, so every rank runs the same collective.
    """
    if not active():
        return
    params = _unique(p for p in parameters if p.requires_grad)
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    flat /= torch.distributed.get_world_size()
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def broadcast_state(modules: Iterable[torch.nn.Module], src: int = 0) -> None:
    """Copy every parameter and buffer of ``modules`` from rank ``src`` to all ranks (identical initial networks)."""
    if not active():
        return
    with torch.no_grad():
        for t in _unique(t for m in modules for t in [*m.parameters(), *m.buffers()]):
            torch.distributed.broadcast(t.data, src=src)


def check_in_sync(modules: Sequence[torch.nn.Module], what: str = "networks") -> None:
    """Raise ``DistributedError`` unless every rank holds the same weights (bitwise sum and sum of squares)."""
    if not active():
        return
    with torch.no_grad():
        tensors = [t.detach().double() for m in modules for t in m.state_dict().values() if t.is_floating_point()]
        mine = torch.stack([sum(t.sum() for t in tensors), sum((t * t).sum() for t in tensors)]).reshape(1, 2)
        gathered = [torch.zeros_like(mine) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(gathered, mine)
    ranks = [i for i, g in enumerate(gathered) if not torch.equal(g, gathered[0])]
    if ranks:
        raise DistributedError(f"ranks {ranks} hold other {what} than rank 0 after training")


def reduce_metrics(metrics: Mapping[str, float], sums: Iterable[str] = ()) -> dict[str, float]:
    """Every rank's metrics combined: the mean over the ranks that report a key, the total for keys in ``sums``.

    Collective: every rank must call it at the same point. Outside torchrun the metrics come back unchanged.
    """
    if not active():
        return dict(metrics)
    gathered = all_gather_json({k: float(v) for k, v in metrics.items()})
    totals = set(sums)
    keys = list(dict.fromkeys(k for g in gathered for k in g))
    out = {}
    for key in keys:
        values = [g[key] for g in gathered if key in g]
        out[key] = float(np.sum(values)) if key in totals else float(np.mean(values))
    return out


def global_mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased standard deviation of ``x`` over the rows of every rank (``x.mean(), x.std()`` outside
    torchrun), e.g. to normalise PPO advantages over the whole rollout, as a single process does."""
    if not active():
        return x.mean(), x.std()
    stats = torch.stack([x.sum(), (x * x).sum(), torch.tensor(float(x.numel()), dtype=x.dtype)]).double()
    torch.distributed.all_reduce(stats, op=torch.distributed.ReduceOp.SUM)
    total, squares, n = stats.unbind()
    mean = total / n
    var = torch.clamp((squares - n * mean * mean) / (n - 1), min=0.0)
    return mean.to(x.dtype), var.sqrt().to(x.dtype)


def all_gather_json(value: Any) -> list[Any]:
    """Every rank's JSON-able ``value``, in rank order (sent as UTF-8 JSON in byte tensors: nothing is unpickled,
    unlike ``all_gather_object``). Collective."""
    import json

    if not active():
        return [value]
    world_size = torch.distributed.get_world_size()
    data = torch.tensor(list(json.dumps(value, sort_keys=True).encode()), dtype=torch.uint8)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(world_size)]
    torch.distributed.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[:data.numel()] = data
    out = [torch.zeros(longest, dtype=torch.uint8) for _ in range(world_size)]
    torch.distributed.all_gather(out, padded)
    return [json.loads(bytes(t[:int(n.item())].tolist()).decode()) for t, n in zip(out, sizes, strict=True)]


def rank_rng(seed: int) -> np.random.Generator:
    """A numpy generator for this rank's own sampling: ``default_rng([seed, rank])`` (distinct per rank)."""
    return np.random.default_rng([seed, rank()])


def failure_message(exc: BaseException) -> str:
    """Describe torchrun's ``ChildFailedError``: each failed rank with its exit code or signal and its error.

    Ranks killed by a signal come first (the cause; the others typically fail after losing their peer), then the
    rest by time.
    """
    failures = getattr(exc, "failures", None) or {}
    parts = []
    for global_rank, failure in sorted(failures.items(), key=lambda kv: (kv[1].exitcode >= 0, kv[1].timestamp)):
        how = (f"killed by signal {failure.signal_name()} (exit code {failure.exitcode})" if failure.exitcode < 0
               else f"exit code {failure.exitcode}")
        message = failure.message
        if isinstance(message, dict):
            message = message.get("message", "")
        detail = str(message).strip().splitlines()[-1] if str(message).strip() else ""
        if detail.startswith(("To enable traceback", "Signal ")):  # torchrun's placeholders say nothing more
            detail = ""
        parts.append(f"rank {global_rank} (local rank {failure.local_rank}, pid {failure.pid}) {how}"
                     + (f": {detail}" if detail else ""))
    name = getattr(exc, "name", "worker")
    return f"distributed training failed ({name}): " + ("; ".join(parts) or str(exc))


def launch(module: str, args: Sequence[str], nproc: int) -> None:
    """Run ``python -m module args...`` as ``nproc`` workers under torchrun on this machine (``--standalone``).

    Same as ``python -m torch.distributed.run --standalone --nproc_per_node N -m module args...``, started in this
    process so that a failure comes back as torchrun's ``ChildFailedError`` and is raised as a
    ``DistributedError`` naming each failed rank and its exit code or signal (:func:`failure_message`). When one
    worker dies, torchrun stops the others: the job fails as a whole.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if nproc < 1:
        raise DistributedError(f"nproc must be at least 1, got {nproc}")
    if DistEnv.from_environ().distributed:
        raise DistributedError("already running under torchrun (WORLD_SIZE > 1): do not launch workers again")
    try:
        run(parse_args(["--standalone", "--nproc_per_node", str(nproc), "-m", module, *args]))
    except ChildFailedError as exc:
        raise DistributedError(failure_message(exc)) from None


def recorded(fn: Any) -> Any:
    """``fn`` wrapped by torch.distributed.elastic's ``record``: under torchrun an exception it raises is written to
    the worker's error file, so the launcher's failure names its message (outside torchrun ``fn`` unchanged)."""
    if not DistEnv.from_environ().distributed:
        return fn
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(fn)
