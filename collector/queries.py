"""Readers' queries (the Query RPC): their own threads, a queue limit, a deadline and a memory budget.

Queries used to share one 4-thread pool with the diagnosis and fault updates, so eight heavy
queries held a ``SELECT 1`` and an operator's acknowledgement for as long as they ran. Here a
query gets a thread of its own (up to ``query_max_running``; more wait, up to
``query_max_queued``, and beyond that are refused with RESOURCE_EXHAUSTED), is checked there
(``check_read_only``: parsing a long text never holds the event loop), runs in a read-only
transaction (``Store.reading``), and a watchdog thread interrupts it past its deadline or, when
the memory DuckDB holds for running queries passes ``query_memory_bytes``, interrupts the oldest
query first (RESOURCE_EXHAUSTED). DuckDB has no per-connection memory limit and cannot open the
store's file a second time, so on the file the budget is this watchdog's; the lake's queries run
in an instance of their own whose ``memory_limit`` is the budget as well.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import duckdb
import grpc

from c4.arrow_ipc import encode_ipc
from c4.collector.ingest import Metrics
from c4.collector.readonly import QueryRefused, check_read_only
from c4.collector.store import Store
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.thread_names import name_os_thread

log = logging.getLogger("c4.collector.queries")

QUERY_CHUNK_ROWS = 65536
#: How often the watchdog looks at deadlines and memory while queries run.
WATCH_INTERVAL_S = 0.05
MIB = 1 << 20


class QueryFailed(Exception):
    """A query ended without a result: the gRPC status code and a message for the reader."""

    def __init__(self, code: grpc.StatusCode, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.refused = refused  # by the statement check (not read-only)


@dataclass(eq=False)
class _Query:
    """One admitted query: its deadline, its cursor while it executes, and why it was stopped."""

    deadline: float
    admitted: float = field(default_factory=time.monotonic)
    cursor: duckdb.DuckDBPyConnection | None = None
    stopped: str = ""  # "timeout", "memory" or "gone" once interrupted
    memory_bytes: int = 0  # what the running queries held when this one was stopped for memory


class QueryRunner:
    """Runs read-only statements apart from every other collector work; see the module docstring."""

    def __init__(
        self, store: Store, metrics: Metrics, max_running: int, max_queued: int, memory_bytes: int
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.max_running = max_running
        self.max_queued = max_queued
        self.memory_bytes = memory_bytes
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="c4-query")
        self._lock = threading.Lock()
        self._admitted: list[_Query] = []
        self._wake = threading.Event()
        self._closed = False
        self._watchdog = threading.Thread(target=self._watch, name="c4-query-watchdog", daemon=True)
        self._watchdog.start()
        check_read_only("SELECT 1")  # the checker's parsing instance starts now, not on a first query

    def _admit(self, timeout_s: float) -> _Query:
        with self._lock:
            if len(self._admitted) >= self.max_running + self.max_queued:
                self.metrics.inc("queries_busy")
                raise QueryFailed(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"collector busy: {len(self._admitted)} queries running or queued "
                    f"(query_max_running = {self.max_running}, query_max_queued = {self.max_queued}); "
                    "try again later",
                )
            q = _Query(deadline=time.monotonic() + timeout_s)
            self._admitted.append(q)
        self._wake.set()
        return q

    def _stop(self, q: _Query, why: str) -> None:
        """Interrupt ``q`` (call with the lock held); a queued one stops before it starts."""
        if not q.stopped:
            q.stopped = why
            if q.cursor is not None:
                q.cursor.interrupt()

    async def run(self, sql: str, max_rows: int, timeout_s: float) -> AsyncIterator[pb.QueryChunk]:
        """Check and execute ``sql`` and yield its rows as Arrow IPC chunks; QueryFailed when it cannot.

        Counted: ``queries_refused`` (not read-only), ``queries_failed`` (any other failure).
        """
        try:
            q = self._admit(timeout_s)
        except QueryFailed:
            self.metrics.inc("queries_failed")
            raise
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(chunks.put_nowait, item)

        loop.run_in_executor(self._pool, self._work, q, sql, max_rows, timeout_s, put)
        try:
            while True:
                item = await chunks.get()
                if item is None:
                    return
                if isinstance(item, QueryFailed):
                    self.metrics.inc("queries_refused" if item.refused else "queries_failed")
                    raise item
                yield item
        finally:
            with self._lock:  # the reader went away (or we are done): stop executing for nobody
                self._stop(q, "gone")

    def _work(self, q: _Query, sql: str, max_rows: int, timeout_s: float, put) -> None:
        started = False
        try:
            if q.stopped:  # its deadline passed, or the reader left, while it waited for a thread
                raise duckdb.InterruptException("stopped before it started")
            try:  # here, not on the event loop: parsing a long text takes a while
                statement = check_read_only(sql)
            except QueryRefused as exc:
                put(QueryFailed(grpc.StatusCode.INVALID_ARGUMENT, str(exc), refused=True))
                return
            with self.store.reading() as cur:
                with self._lock:
                    if q.stopped:  # stopped while it waited for the store: its interrupt had no cursor
                        raise duckdb.InterruptException("stopped before it started")
                    q.cursor = cur
                started = True
                self.metrics.inc("queries_started")
                try:
                    self._stream(cur, q, statement, max_rows, put)
                finally:
                    with self._lock:
                        q.cursor = None
        except duckdb.Error as exc:
            put(self._failure(q, exc, timeout_s))
        except Exception as exc:  # never let one query take the server down
            log.exception("query crashed")
            put(QueryFailed(grpc.StatusCode.INTERNAL, f"query failed: {exc}"))
        finally:
            with self._lock:
                self._admitted.remove(q)
            if started:
                self.metrics.inc("queries_done")

    def _stream(self, cur, q: _Query, statement, max_rows: int, put) -> None:
        cur.execute(statement)
        reader = cur.to_arrow_reader(QUERY_CHUNK_ROWS)
        sent, emitted = 0, False
        for rb in reader:
            if q.stopped == "gone":
                return
            truncated = sent + rb.num_rows > max_rows
            if truncated:
                rb = rb.slice(0, max_rows - sent)
            sent += rb.num_rows
            put(pb.QueryChunk(arrow_ipc=encode_ipc(rb), truncated=truncated))
            emitted = True
            if truncated:
                break
        if q.stopped:  # interrupted between two chunks: the result is not whole
            raise duckdb.InterruptException(q.stopped)
        if not emitted:
            put(pb.QueryChunk(arrow_ipc=encode_ipc(reader.schema.empty_table())))
        put(None)

    def _failure(self, q: _Query, exc: duckdb.Error, timeout_s: float) -> QueryFailed:
        """The status a reader gets for a query DuckDB ended with ``exc``."""
        if q.stopped == "memory":
            self.metrics.inc("queries_cancelled_memory")
            return QueryFailed(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"query cancelled: running queries held {q.memory_bytes / MIB:.0f} MiB, over the budget "
                f"of {self.memory_bytes / MIB:.0f} MiB (query_memory_bytes); it was the oldest",
            )
        if q.stopped == "timeout" or (isinstance(exc, duckdb.InterruptException) and not q.stopped):
            self.metrics.inc("queries_timed_out")
            return QueryFailed(grpc.StatusCode.DEADLINE_EXCEEDED, f"query timed out after {timeout_s:g} s")
        if q.stopped == "gone":
            return QueryFailed(grpc.StatusCode.CANCELLED, "query cancelled by the reader")
        if isinstance(exc, duckdb.OutOfMemoryException):
            self.metrics.inc("queries_cancelled_memory")
            return QueryFailed(grpc.StatusCode.RESOURCE_EXHAUSTED, f"query ran out of memory: {exc}")
        return QueryFailed(grpc.StatusCode.INVALID_ARGUMENT, f"query failed: {exc}")

    def _watch(self) -> None:
        """Interrupt queries past their deadline, and the oldest while the queries' memory is over budget."""
        name_os_thread("c4-query-watch")
        while not self._closed:
            with self._lock:
                idle = not self._admitted
            if idle:
                self._wake.wait()
                self._wake.clear()
                continue
            time.sleep(WATCH_INTERVAL_S)
            try:
                self._check(time.monotonic())
            except Exception:  # a failed look is retried at the next one; the watchdog never dies
                log.exception("query watchdog check failed")

    def _check(self, now: float) -> None:
        with self._lock:
            for q in self._admitted:
                if now >= q.deadline:
                    self._stop(q, "timeout")
                if q.stopped and q.cursor is not None:
                    # interrupted, still executing: an interrupt that came after the cursor was handed over
                    # but before its statement started is lost (DuckDB clears it as a query begins), and a
                    # query that never ends would hold its thread and slot for good: interrupt it again
                    q.cursor.interrupt()
            executing = [q for q in self._admitted if q.cursor is not None and not q.stopped]
            draining = any(q.stopped == "memory" for q in self._admitted)
        if not executing or draining or not self.memory_bytes:
            return  # a query stopped for memory frees it as it unwinds: wait for that first
        used = self.store.query_memory_used()
        if used <= self.memory_bytes:
            return
        with self._lock:
            oldest = min(
                (q for q in self._admitted if q.cursor is not None and not q.stopped),
                key=lambda q: q.admitted,
                default=None,
            )
            if oldest is not None:
                oldest.memory_bytes = used
                self._stop(oldest, "memory")
        if oldest is not None:
            log.warning(
                "query cancelled for memory used_mib=%.0f budget_mib=%.0f",
                used / MIB,
                self.memory_bytes / MIB,
            )

    def close(self) -> None:
        """Interrupt every query and stop the threads."""
        with self._lock:
            self._closed = True
            for q in self._admitted:
                self._stop(q, "gone")
        self._wake.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
