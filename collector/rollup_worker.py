"""Where the rollups' chunks are computed: on the calling thread (``INLINE``), or in a worker process of
their own at a lower priority (``ProcessChunks``).

A minute's rollups of 2,000 nodes are ~25 s of CPU, most of it numpy over chunks of whole entities. On a
thread of the collector, even at nice 10, they share the interpreter lock with the writer and the gRPC
loop: whenever the rollup thread held the lock it decided when they ran, and a low-priority thread
preempted while holding it held them all. The ack p99 of the 5-second windows during the rollups of
full minutes was 2-6 s, against 0.4-1 s between (``c4 bench load --agents 2000 --duration-s 180``). In a
process of its own the computing has its own interpreter, and the kernel's scheduler alone ranks it
below the writer. The collector's rollup thread still runs the DuckDB queries (they release the lock)
and hands the chunks over; a chunk is ~50,000 rows, so the copy through the pipe is a small part of its
compute.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TypeVar

log = logging.getLogger("c4.collector.rollup_worker")

T = TypeVar("T")

#: Chunks handed to the worker ahead of the one awaited: the next is read from DuckDB while one computes.
IN_FLIGHT = 2

__all__ = ["INLINE", "BrokenProcessPool", "Chunks", "InlineChunks", "ProcessChunks"]


class Chunks(Protocol):
    """Computes ``fn(*args)`` for each args tuple, results in order."""

    def map(self, fn: Callable[..., T], calls: Iterable[tuple]) -> Iterator[T]:
        """The results of ``fn`` over ``calls``, in order; closing the iterator early drops the rest."""
        ...


class InlineChunks:
    """Each chunk on the calling thread."""

    def map(self, fn: Callable[..., T], calls: Iterable[tuple]) -> Iterator[T]:
        """``fn(*args)`` for each, as the caller iterates."""
        return (fn(*args) for args in calls)


#: Chunks computed where they are read (tests, benchmarks, ``roll_all``).
INLINE = InlineChunks()


def _worker_start(nice: int) -> None:
    """In the worker: run at nice value ``nice`` (every thread of it: a process of its own). It starts with
    the nice of the thread that started it (the rollup thread's, already lowered), hence a value, not a step."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        log.debug("rollup worker priority not set error=%s", exc)


class ProcessChunks:
    """Chunks computed in one worker process (spawned on first use, ``nice`` steps below the collector).

    ``fn`` must be importable by name (a module-level function) and its arguments picklable. A worker
    that died (killed, out of memory) makes ``map`` raise ``BrokenProcessPool``; the next ``map``
    starts a new one."""

    def __init__(self, nice: int, in_flight: int = IN_FLIGHT) -> None:
        #: the worker's nice value: ``nice`` steps below the process creating this (at most 19)
        self.nice = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + nice)
        self.in_flight = max(1, in_flight)
        self._pool: ProcessPoolExecutor | None = None
        self.started = 0  # workers started so far

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),  # never fork a process with gRPC's threads
                initializer=_worker_start,
                initargs=(self.nice,),
            )
            self.started += 1
        return self._pool

    def map(self, fn: Callable[..., T], calls: Iterable[tuple]) -> Iterator[T]:
        """``fn(*args)`` for each in the worker, ``in_flight`` at a time, results in order."""
        pool = self._workers()
        pending: deque[Future[Any]] = deque()
        try:
            for args in calls:
                pending.append(pool.submit(fn, *args))
                if len(pending) >= self.in_flight:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            self._drop(pool)
            raise
        finally:
            for f in pending:
                f.cancel()

    def _drop(self, pool: ProcessPoolExecutor) -> None:
        if self._pool is pool:
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def worker_pids(self) -> list[int]:
        """The worker's process id, once started (for tests and the benchmark's CPU count)."""
        pool = self._pool
        return list(getattr(pool, "_processes", None) or {}) if pool is not None else []

    def close(self) -> None:
        """Stop the worker (a chunk under way is dropped)."""
        if self._pool is not None:
            self._drop(self._pool)
