"""torch intra-op threads: small RL networks run fastest on one thread, especially on busy 2-core hosts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Use ``n`` torch threads inside the block, restoring the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
