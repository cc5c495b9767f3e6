"""Checkpoints of the store's DuckDB file from a thread of their own, off the writer's commits.

DuckDB checkpoints by itself inside the COMMIT that leaves the write-ahead log over
``checkpoint_threshold``: the writer thread, and with it every ack waiting for a commit, then
waits for the whole checkpoint (every table's new rows compressed and written, the metadata, the
fsyncs). Since DuckDB 1.5 a checkpoint run from another connection lets commits go on meanwhile
(duckdb/duckdb#20052, #20160, #20286); in the pinned 1.5.5 an INSERT still waits while the
checkpoint writes the table it inserts into (a table-level lock, duckdb/duckdb#25988 lifts it),
so the writer is held for that table's part only, not for the whole checkpoint.

So with ``background_checkpoints`` (on by default) the store sets DuckDB's own threshold to a
backstop (``BACKSTOP_FACTOR`` times the size asked for, reached only when these checkpoints fall
behind) and this thread runs ``CHECKPOINT`` once the log is over the size asked for. A plain
CHECKPOINT is refused while a transaction that updates is open: it is tried again a few
milliseconds later, between commits, and never forced (FORCE CHECKPOINT would hold new
transactions back until it is done).

Every group commit inserts into the big sample tables and upserts ``_c4_agent_seq`` (a table with
a primary key), so a commit beside a checkpoint of the same file still waits for all of it. That is
why, during the checkpoint, the store commits into a second file of its own (the ``Diversion``:
c4.collector.side_store) and moves those rows in afterwards. Measured (/tmp script, the real Store,
2,000 simulated nodes at 5 ticks a batch, groups of 512 batches, WAL 128 MiB, threads 1): commit
p99 1,543 ms and max 2,242 ms with DuckDB's own checkpoints, 219 and 219 ms diverted, every row and
sequence number in the store after both; ``c4 bench load --agents 2000 --ticks-per-batch 5`` ack p99
2.0 s before, 0.47 s after.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import duckdb

from c4.thread_names import name_os_thread

log = logging.getLogger("c4.collector.checkpointer")

#: DuckDB's own checkpoint threshold, as a multiple of the background one (a backstop only).
BACKSTOP_FACTOR = 4
#: How often the write-ahead log's size is looked at.
POLL_S = 0.1
#: Wait before trying again a CHECKPOINT refused because a commit was under way.
RETRY_S = 0.005
#: Wait after a checkpoint that failed for another reason (e.g. a full disk) before the next try.
FAILED_BACKOFF_S = 5.0


def checkpoint_when_free(
    cur: duckdb.DuckDBPyConnection, give_up: Callable[[], bool], retry_s: float
) -> float | None:
    """One CHECKPOINT, tried again every ``retry_s`` while another transaction that writes holds DuckDB's
    checkpoint lock (a plain CHECKPOINT is refused at once then; FORCE would abort that transaction), until
    ``give_up()``: the seconds of the try that ran, None when it gave up first. Other errors are raised."""
    while not give_up():
        start = time.perf_counter()
        try:
            cur.execute("CHECKPOINT")
        except duckdb.TransactionException:  # a commit holds the checkpoint lock: right after it
            time.sleep(retry_s)
            continue
        return time.perf_counter() - start
    return None


def wal_path(db_path: Path) -> Path:
    """DuckDB's write-ahead log of a database file: ``c4.duckdb`` -> ``c4.duckdb.wal``."""
    return db_path.with_name(db_path.name + ".wal")


class Diversion(Protocol):
    """Where commits go while the file checkpoints (the store's side file, c4.collector.side_store)."""

    def begin_diversion(self) -> None:
        """Commits from now on go elsewhere."""

    def end_diversion(self) -> None:
        """The checkpoint is over: commits may come back."""

    def checkpoint_failed(self, exc: BaseException) -> None:
        """A checkpoint failed (DuckDB may have invalidated the file: see Store._reopen)."""


class Checkpointer:
    """A thread that checkpoints a DuckDB file whenever its WAL is over ``wal_bytes``."""

    def __init__(
        self,
        cursor: Callable[[], duckdb.DuckDBPyConnection],
        db_path: Path,
        wal_bytes: int,
        diversion: Diversion | None = None,
    ) -> None:
        self._cursor = cursor
        self.diversion = diversion
        self.wal_path = wal_path(Path(db_path))
        self.wal_bytes = wal_bytes
        self.checkpoints = 0
        self.failures = 0
        #: The longest checkpoint so far, seconds.
        self.max_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="c4-checkpointer", daemon=True)

    def start(self) -> Checkpointer:
        """Start watching the log."""
        self._thread.start()
        return self

    def wal_size_bytes(self) -> int:
        """The write-ahead log's size now (0 when there is none)."""
        try:
            return self.wal_path.stat().st_size
        except OSError:
            return 0

    def _run(self) -> None:
        name_os_thread("c4-checkpointer")
        cur: duckdb.DuckDBPyConnection | None = self._cursor()
        try:
            while not self._stop.wait(POLL_S):
                if self.wal_size_bytes() <= self.wal_bytes:
                    continue
                if cur is None:
                    try:
                        cur = self._cursor()
                    except duckdb.Error:  # the store is not open again yet
                        self._stop.wait(FAILED_BACKOFF_S)
                        continue
                if not self._checkpoint(cur):
                    # a failed checkpoint may have made DuckDB invalidate the file: the store opens it
                    # again (Store._reopen), and the next try needs a cursor of that instance
                    _close_quietly(cur)
                    cur = None
        finally:
            if cur is not None:
                _close_quietly(cur)

    def _checkpoint(self, cur: duckdb.DuckDBPyConnection) -> bool:
        """One CHECKPOINT (commits diverted meanwhile, when there is somewhere to divert them); False
        when it failed."""
        if self.diversion is None:
            return self._checkpoint_once(cur)
        self.diversion.begin_diversion()
        try:
            return self._checkpoint_once(cur)
        finally:
            self.diversion.end_diversion()

    def _checkpoint_once(self, cur: duckdb.DuckDBPyConnection) -> bool:
        """One CHECKPOINT, tried again between commits until it runs (or the thread stops); False when
        it failed for another reason."""
        try:
            took_s = checkpoint_when_free(cur, self._stop.is_set, RETRY_S)
        except duckdb.Error as exc:
            self.failures += 1
            log.warning("background checkpoint failed (the WAL keeps every commit) error=%s", exc)
            if self.diversion is not None:
                self.diversion.checkpoint_failed(exc)
            self._stop.wait(FAILED_BACKOFF_S)
            return False
        if took_s is not None:
            self.checkpoints += 1
            self.max_s = max(self.max_s, took_s)
            log.debug("checkpoint took_s=%.3f", took_s)
        return True

    def stop(self) -> None:
        """Stop the thread (after the checkpoint under way, if any)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _close_quietly(cur: duckdb.DuckDBPyConnection) -> None:
    """Close a cursor; one of an instance DuckDB invalidated may refuse even that."""
    try:
        cur.close()
    except duckdb.Error:
        pass
