"""Group commit: many concurrent requests share one durable transaction.

Requests put their records on a bounded queue and wait on a future; one writer thread takes
everything queued, writes it in a single transaction, and only then resolves the futures.
Under load, one commit (and one fsync in ``full`` durability) covers many requests; alone, a
request pays one small commit. The queue bound caps memory: producers block when it is full.
A failed transaction is retried job by job so one bad record can't fail its neighbours, and
every error reaches the waiting caller; nothing is swallowed in the thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)
_STOP = object()


@dataclass
class WriteJob:
    """Records of one kind from one caller, and the future the caller waits on."""

    kind: str
    items: Sequence[Any]
    future: Future = field(default_factory=Future)


class GroupCommitWriter:
    """A writer thread that commits queued jobs in groups."""

    def __init__(self, write: Callable[[list[WriteJob]], list[Any]], name: str = "rlops-writer",
                 max_queue: int = 10_000, max_group: int = 512) -> None:
        self._write = write
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._max_group = max_group
        self._closed = False
        self.commits = 0
        self.jobs_written = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, kind: str, items: Sequence[Any]) -> Future:
        """Queue records; the future resolves after they are committed (blocks when the queue is full)."""
        if self._closed:
            raise RuntimeError("experience store writer is closed")
        job = WriteJob(kind, items)
        self._queue.put(job)
        return job.future

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs = [first]
            stop = False
            while len(jobs) < self._max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                jobs.append(nxt)
            self._commit(jobs)
            if stop:
                return

    def _commit(self, jobs: list[WriteJob]) -> None:
        try:
            results = self._write(jobs)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller below
            if len(jobs) == 1:
                logger.warning("experience store write failed: %s", exc)
                jobs[0].future.set_exception(exc)
                return
            for job in jobs:  # isolate the failing job; the others still commit
                self._commit([job])
            return
        self.commits += 1
        self.jobs_written += len(jobs)
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(result)
