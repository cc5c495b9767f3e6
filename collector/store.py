"""The DuckDB store: the one owner of the file, exactly-once commits of Arrow batches."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from c4.arrow_ipc import DecodeLimits, Frame
from c4.catalogue import Catalogue, TableSpec
from c4.collector import side_store
from c4.collector.checkpointer import BACKSTOP_FACTOR, Checkpointer, checkpoint_when_free, wal_path
from c4.collector.sequence import AgentSeq, SequenceBook, Verdict

log = logging.getLogger("c4.collector.store")

SEQ_TABLE = side_store.SEQ_NAME  # "_c4_agent_seq"
#: duckdb_memory() tags of running operators (hash tables, sorts, windows, buffered results); the
#: others hold table data, indexes and metadata, which ingest and the block cache use.
QUERY_MEMORY_TAGS = (
    "HASH_TABLE",
    "ORDER_BY",
    "WINDOW",
    "COLUMN_DATA",
    "ALLOCATOR",
    "CSV_READER",
    "PARQUET_READER",
)
DEFAULT_CHECKPOINT_WAL_BYTES = 128 << 20
#: After a failed attempt to open an invalidated store again (the disk still full), wait this long.
REOPEN_RETRY_S = 2.0
#: How long closing waits for another cursor's write transaction to end (a job finishing as the collector
#: stops) before its CHECKPOINT gives up and leaves the write-ahead log to the next start.
CLOSE_CHECKPOINT_WAIT_S = 10.0
#: Between two tries of that CHECKPOINT.
CLOSE_CHECKPOINT_RETRY_S = 0.05


@dataclass(slots=True)
class Unchecked:
    """An agent's payload whose framing, size and schema passed, its values not yet checked."""

    payload: bytes
    frame: Frame
    #: The node every row must name (None: not checked, callers are not authenticated).
    node: str | None
    #: The collector's receive time (us since the epoch); rows dated after ``limit_us`` are set to it.
    received_us: int
    limit_us: int
    limits: DecodeLimits


@dataclass
class PendingBatch:
    """A validated batch waiting to be committed. ``seq`` 0 means unsequenced (internal rows).

    ``ipc_parts``, when set, is the batch's wire form: its schema message and its record batch
    messages, whose bytes hold exactly ``table`` (lets an ingest process merge batches unencoded).
    """

    agent_id: str
    seq: int
    spec: TableSpec
    #: The rows; None while ``unchecked`` (decoded in the writer, with the table's other batches).
    table: pa.Table | None
    ipc_parts: tuple[bytes, memoryview] | None = None
    #: The agent stream (Push/PushBundle call) that carried it: after a failed batch, nothing more commits.
    stream: int = 0
    #: The spool epoch the batch was sent under (0: none).
    spool_epoch: int = 0
    #: A payload framed but not decoded yet: its values are checked in the writer
    #: (``c4.collector.batch_checks``), many agents' batches of one table in one go.
    unchecked: Unchecked | None = None
    #: After those checks: the table its rows were decoded into with the others, their offset in it
    #: and their count (``table`` stays None: ``rows_table`` slices it when it is needed alone).
    source: tuple[pa.Table, int, int] | None = None
    #: After those checks: (newest time before clamping in us, rows clamped, node of the first row),
    #: handed back with the commit result for the collector's clock watch.
    clock: tuple[int | None, int, str] | None = None
    #: (agent id, spool epoch) of Hellos whose epochs this batch's transaction records (see ``Store.open_agent``)
    opens: tuple[tuple[str, int], ...] = ()

    @property
    def num_rows(self) -> int:
        """Rows of the batch (declared by its payload while unchecked)."""
        if self.table is not None:
            return self.table.num_rows
        if self.source is not None:
            return self.source[2]
        return self.unchecked.frame.rows

    def rows_table(self) -> pa.Table:
        """The batch's rows as a table of their own."""
        if self.table is None and self.source is not None:
            whole, start, rows = self.source
            return whole.slice(start, rows)
        return self.table

    @classmethod
    def internal(
        cls, spec: TableSpec, rows: list[dict], opens: tuple[tuple[str, int], ...] = ()
    ) -> PendingBatch:
        """Rows the collector writes itself (nodes, faults, its metrics): no agent, no sequence; ``opens``:
        the (agent id, spool epoch) of Hellos whose epochs the same transaction records."""
        return cls("", 0, spec, pa.Table.from_pylist(rows, schema=spec.arrow_schema), opens=opens)


class StoreUnavailable(RuntimeError):
    """DuckDB invalidated the store and opening it again failed so far (the disk is still full)."""


@dataclass(frozen=True)
class CommitResult:
    """Outcome of one batch: committed, duplicate, or failed with an error message.

    An error is retryable (the agent sends the batch again) unless ``refused``: rows that can never
    be stored (a conversion or constraint error of that batch alone), dropped by the agent.
    """

    rows: int = 0
    duplicate: bool = False
    error: str = ""
    refused: bool = False
    #: A refusal's gRPC status code (0: INVALID_ARGUMENT) and metrics counter (checks done in the writer).
    code: int = 0
    counter: str = ""
    #: Of a batch checked in the writer: ``PendingBatch.clock``, for the collector's clock watch.
    clock: tuple[int | None, int, str] | None = None

    @classmethod
    def of(cls, verdict: Verdict, clock: tuple[int | None, int, str] | None = None) -> CommitResult:
        """The result of a batch the sequence book kept out of the commit."""
        return cls(duplicate=verdict.duplicate, error=verdict.error, clock=clock)


#: Errors of one batch alone that no retry can cure: its rows do not fit the table.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    duckdb.ConversionException,
    duckdb.ConstraintException,
    duckdb.TypeMismatchException,
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    UnicodeDecodeError,
)


def _seq_ddl(table: str) -> str:
    """The sequence table's DDL (``table`` may name another attached database's)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (agent_id VARCHAR PRIMARY KEY, last_seq UBIGINT NOT NULL, "
        "updated TIMESTAMP NOT NULL, epoch UBIGINT NOT NULL DEFAULT 0)"
    )


def _seq_upsert_sql(target: str, source: str) -> str:
    """The statement storing ``source``'s sequence rows in ``target``: one row per agent, replaced."""
    return (
        f"INSERT OR REPLACE INTO {target} (agent_id, last_seq, updated, epoch) "
        f"SELECT agent_id, last_seq, updated, epoch FROM {source}"
    )


def _one_chunk(tables: list[pa.Table]) -> pa.Table:
    """The tables' rows as one table of one contiguous chunk.

    DuckDB's Arrow scan pays per chunk, and agents send many small ones; ``concat_batches`` copies
    each column once, where concatenating tables and then combining their chunks cost 2-3 times more.
    """
    batches = [rb for t in tables for rb in t.to_batches()]
    if len(batches) == 1:
        return pa.Table.from_batches(batches)
    if not batches:
        return tables[0].combine_chunks()
    return pa.Table.from_batches([pa.concat_batches(batches)])


def _decoded_together(group: list[PendingBatch]) -> pa.Table | None:
    """The table a group's batches were decoded into together, when they are all its rows, in order."""
    first = group[0].source
    if first is None or first[1] != 0:
        return None
    whole, at = first[0], 0
    for b in group:
        if b.source is None or b.source[0] is not whole or b.source[1] != at:
            return None
        at += b.source[2]
    return whole if at == whole.num_rows else None


def default_store_threads() -> int:
    """DuckDB threads when ``store_threads`` is 0: one per usable core, less one for the gRPC loop (at least 1)."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Store:
    """Owns the DuckDB file. Writes come from one thread; reads use per-thread cursors."""

    def __init__(
        self,
        path: Path | str,
        catalogue: Catalogue,
        checkpoint_wal_bytes: int = DEFAULT_CHECKPOINT_WAL_BYTES,
        threads: int = 0,
        background_checkpoints: bool = False,
        merge_row_groups: bool = False,
    ) -> None:
        self.path = Path(path)
        self.catalogue = catalogue
        self.con = self._connect()
        # DuckDB checkpoints when a commit leaves the WAL over this size. Each checkpoint costs a
        # fixed ~0.3 s on top of the data it writes, so the default 16 MB (every ~2 s at 180k rows/s)
        # spent a third of the writer's time there; a larger WAL only costs replay time at start.
        # With background_checkpoints a thread of its own checkpoints at that size, off the writer's
        # commits (see c4.collector.checkpointer), and DuckDB's own threshold is only a backstop.
        self._threshold_bytes = checkpoint_wal_bytes * (BACKSTOP_FACTOR if background_checkpoints else 1)
        # DuckDB's default is one thread per core; one thread appends the same rows with half the CPU
        # (measured: 1,000 nodes' ticks per commit, 0.16 ms of CPU per node tick at 1 thread, 0.32 at 2,
        # on the 2-core host), and the gRPC loop needs a core of its own: 0 means one per core but one
        self._threads = threads or self._default_threads()
        # DuckDB's checkpoints merge adjacent partly filled row groups into fuller ones (up to 3 into
        # fewer, rewriting and compressing every row of them again). A checkpoint every few seconds
        # writes each table's new rows as one partly filled row group, so most checkpoints also
        # rewrote earlier ones: at 2,000 nodes (c4 bench load) checkpoints grew from 0.5 s to 2-4 s of
        # CPU, and the rows diverted meanwhile (and the acks waiting on their move) grew with them.
        # Off (max_vacuum_tasks = 0), each checkpoint writes only its new rows; a row group left
        # empty by retention is still dropped (that needs no vacuum task).
        self._merge_row_groups = merge_row_groups
        self._configure()
        self._lock = threading.Lock()
        #: Why DuckDB invalidated the store's instance ('' while it is usable): a checkpoint of the file
        #: failed (a full disk). Every statement fails until the file is opened again (``_reopen``).
        self.invalidated = ""
        self.reopens = 0
        self._reopen_after = 0.0  # time.monotonic() before which no other reopen is tried
        self._create_schema()
        #: with background checkpoints, commits go to a side file while the store's file checkpoints
        #: (c4.collector.side_store): True while they must (a checkpoint runs, or rows wait to move)
        self.side = background_checkpoints
        self.diverting = False
        self._side_written: set[str] = set()  # side tables holding rows not moved yet
        self._side_dirty = False  # the side file holds commits not moved into the store yet
        # its rows are in the store, its generation recorded as moved, but emptying it failed: it must
        # take no commit until emptied (the emptying, or a restart, would drop it as moved already)
        self._side_moved = False
        self.side_moves = 0
        # False while DuckDB has given up on the side file (its checkpoint failed) and attaching it again
        # failed too: commits wait for the store's checkpoints, as without a side file, until it attaches
        self.side_usable = True
        if (
            self.side or side_store.side_path(self.path).exists()
        ):  # rows a crash left there come in either way
            self._open_side()
        self.book = SequenceBook(self._load_seqs())
        self._lock_down()
        self.checkpointer: Checkpointer | None = None
        if background_checkpoints:
            self.checkpointer = Checkpointer(
                lambda: self.con.cursor(), self.path, int(checkpoint_wal_bytes), diversion=self
            ).start()

    def _configure(self) -> None:
        """The writing connection's settings: DuckDB's own checkpoint threshold and its threads."""
        # (table, in the side file) -> its stored columns (see _table_columns; a new connection: looked up again)
        self._columns_of: dict[tuple[str, bool], list[str]] = {}
        self.con.execute(f"SET checkpoint_threshold = '{int(self._threshold_bytes)}B'")
        if not self._merge_row_groups:
            self.con.execute("SET max_vacuum_tasks = 0")
        if self._threads:
            self.con.execute(f"SET threads = {int(self._threads)}")

    def _default_threads(self) -> int:
        """DuckDB threads when none are asked for (0: DuckDB's own default)."""
        return default_store_threads()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(self.path))

    def _lock_down(self) -> None:
        # From here on nothing may touch the file system through SQL: ingest uses
        # registered Arrow tables only, and Query runs untrusted read-only SQL.
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def _load_seqs(self) -> dict[str, AgentSeq]:
        rows = self.con.execute(f"SELECT agent_id, last_seq, epoch FROM {SEQ_TABLE}").fetchall()
        return {a: AgentSeq(int(s), int(e or 0)) for a, s, e in rows}

    def known_seq(self, agent_id: str) -> int:
        """The agent's last committed sequence number in its spool epoch (0 if never seen)."""
        return self.book.get(agent_id).last_seq

    def open_agent(self, agent_id: str, spool_epoch: int) -> int:
        """An agent's Hello: record its spool epoch (a new one starts its sequence over) and return its
        last committed sequence, ordered with the commits. A transaction of its own (~2.5 ms) unless a
        group commit recorded the epoch already (``PendingBatch.opens``: the collector's Hello sends it
        with the agent's nodes row, so 2,000 agents joining cost no 2,000 transactions)."""
        self.known_seq(agent_id)  # a lake store looks the agent up across shards here, outside the lock
        with self._lock:
            if not self._usable():
                raise StoreUnavailable(f"store unavailable until it is opened again: {self.invalidated}")
            state, changed = self.book.open(agent_id, spool_epoch)
            if changed:
                side = self._into_side()
                with self._transaction():
                    self._write_seqs({agent_id: state}, _utcnow(), into_side=side)
                if side:
                    self._side_dirty = True
                self.book.agents[agent_id] = state
            return state.last_seq

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT on the writing connection; rolled back on any error, which is raised as it was."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
            self.con.execute("COMMIT")
        except BaseException:
            try:
                self.con.execute("ROLLBACK")
            except duckdb.Error:  # a failed COMMIT already ended it: keep the real cause (e.g. disk full)
                pass
            raise

    def _create_seq_table(self) -> None:
        self.con.execute(_seq_ddl(SEQ_TABLE))
        self._add_epoch_column(SEQ_TABLE)

    def _open_side(self) -> None:
        """Attach the side file; move in the rows a previous process left there (unless it moved them)."""
        con = self.con
        side_store.attach(con, side_store.side_path(self.path))
        names = [n for n in side_store.side_tables(con) if n != side_store.GENERATION_TABLE]
        if names:
            gen, moved = side_store.generation(con), side_store.moved_generation(con)
            full = side_store.tables_with_rows(con, names)
            if full and moved == gen:
                log.info("side file rows were moved before the last stop; dropped generation=%d", gen)
            elif full:
                with self._transaction():
                    for table in full:
                        if table == SEQ_TABLE:
                            continue
                        have = set(side_store.side_columns(con, table, database=None))
                        cols = [c for c in side_store.side_columns(con, table) if c in have]
                        if have and cols:
                            con.execute(side_store.move_sql(table, cols))
                    if SEQ_TABLE in full:
                        self._move_side_seqs()
                    self._record_moved(gen)
                log.info("side file rows moved into the store tables=%s generation=%d", ",".join(full), gen)
            if full:
                self._empty_side(names, gen)
        side_store.reshape(con, self.catalogue, _seq_ddl(f"{side_store.SIDE_DB}.{SEQ_TABLE}"))
        self._columns_of.clear()  # the side tables may have changed shape
        with self._transaction():
            side_store.follow(con, side_store.moved_generation(con))

    def _move_side_seqs(self) -> None:
        self.con.execute(_seq_upsert_sql(SEQ_TABLE, f"{side_store.SIDE_DB}.{SEQ_TABLE}"))

    def _record_moved(self, gen: int) -> None:
        self.con.execute(side_store.moved_table_ddl())
        self.con.execute(f"DELETE FROM {side_store.MOVED_TABLE}")
        self.con.execute(f"INSERT INTO {side_store.MOVED_TABLE} VALUES (?, ?)", [gen, _utcnow()])

    def _empty_side(self, tables: Sequence[str], gen: int) -> None:
        """Delete the side rows (already in the store) and start the next generation; then checkpoint it."""
        side = side_store.SIDE_DB
        with self._transaction():
            for table in tables:
                self.con.execute(f'DELETE FROM {side}."{table}"')
            self.con.execute(f"DELETE FROM {side}.{side_store.GENERATION_TABLE}")
            self.con.execute(f"INSERT INTO {side}.{side_store.GENERATION_TABLE} VALUES (?)", [gen + 1])
        self._fold_side_log()

    def _fold_side_log(self) -> None:
        """Checkpoint the (just emptied) side file once its log is long."""
        side = side_store.SIDE_DB
        wal = wal_path(side_store.side_path(self.path))
        try:
            big = wal.stat().st_size > side_store.SIDE_WAL_CHECKPOINT_BYTES
        except OSError:
            big = False
        if not big:
            return
        try:  # keeps the side file's log short (the file is empty now: little to write)
            self.con.execute(f"CHECKPOINT {side}")
        except duckdb.Error as exc:
            # DuckDB gives up on a file whose checkpoint failed (e.g. a full disk): attach it again (its
            # log replays; nothing is in it now); while that fails too, commits are not diverted (they
            # wait for the store's checkpoints instead of failing) and each checkpoint tries again
            log.error("checkpoint of the side file failed error=%s", exc)
            self.side_usable = self._reattach_side_if_given_up(exc, force=True)
            if not self.side_usable:
                log.error("side file not attached; commits wait for checkpoints until it is")

    def begin_diversion(self) -> None:
        """From the checkpointer, before it checkpoints the store's file: commits go to the side file."""
        with self._lock:
            if not self.side_usable:  # given up on after a failed checkpoint: space may be back
                self.side_usable = self._reattach_side_if_given_up(None, force=True)
            self.diverting = self.side_usable

    def end_diversion(self) -> None:
        """From the checkpointer, after the checkpoint: the next commit (or an idle writer) moves the side rows."""
        with self._lock:
            self.diverting = False

    def settle(self) -> None:
        """From the idle writer: open the store again if DuckDB invalidated it (so that reads work again
        with no commit coming), and move the side file's rows into the store when the checkpoint is over."""
        if self.invalidated:
            with self._lock:
                self._usable()
            return
        if not self._side_dirty or self.diverting:
            return
        with self._lock:
            try:
                self._settle_locked()
            except duckdb.Error as exc:
                self._reattach_side_if_given_up(exc)
                raise

    def _reattach_side_if_given_up(self, exc: BaseException | None, force: bool = False) -> bool:
        """DuckDB gives up on a file whose checkpoint failed (its own, inside a diverted commit that took
        the side file's log past ``checkpoint_threshold``, or ours, on a full disk) until it is attached
        again: attach it again (its log replays, every acked row is still there), else every commit and
        move would fail until a restart. ``force``: attach again whatever ``exc`` says. Whether the side
        file is attached after. Called under the lock, outside a transaction."""
        if not self.side:
            return False
        given_up = force or (exc is not None and "invalidated" in str(exc) and side_store.SIDE_DB in str(exc))
        try:  # (not attached: an earlier attempt detached it and could not attach it again)
            if not given_up and side_store.attached(self.con):
                return True
            self.con.execute(f"DETACH DATABASE IF EXISTS {side_store.SIDE_DB}")
            side_store.attach(self.con, side_store.side_path(self.path))
            self._columns_of.clear()
        except duckdb.Error as again:  # still no space: the next failure tries again
            log.warning("attaching the side file again failed error=%s", again)
            return False
        log.warning(
            "side file attached again after DuckDB gave up on it error=%s", exc or "an earlier failure"
        )
        return True

    @property
    def side_pending(self) -> bool:
        """The side file holds rows the store does not have yet."""
        return self._side_dirty

    def _settle_locked(self) -> None:
        if not self._side_dirty or self.diverting:
            return
        con = self.con
        started = time.perf_counter()
        gen = side_store.generation(con)
        tables = sorted(self._side_written)
        if side_store.moved_generation(con) != gen:  # else moved already, and emptying it failed
            with self._transaction():
                for table in tables:
                    spec = self.catalogue[table]
                    con.execute(side_store.move_sql(table, list(spec.column_names)))
                self._move_side_seqs()
                self._record_moved(gen)
        self._side_moved = True
        self._empty_side([*tables, SEQ_TABLE], gen)
        self._side_moved = False
        self._side_written.clear()
        self._side_dirty = False
        self.side_moves += 1
        log.debug("side file rows moved in took_s=%.3f", time.perf_counter() - started)

    def _add_epoch_column(self, table: str) -> None:
        """Stores written before spool epochs existed get the column (epoch 0: not known yet)."""
        self.con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS epoch UBIGINT DEFAULT 0")

    @staticmethod
    def _seq_rows(changed: dict[str, AgentSeq], now: datetime) -> pa.Table:
        """The agents' new last sequence numbers as Arrow, for one INSERT (executemany goes row by row)."""
        return pa.table(
            {
                "agent_id": pa.array(list(changed), pa.string()),
                "last_seq": pa.array([s.last_seq for s in changed.values()], pa.uint64()),
                "epoch": pa.array([s.epoch for s in changed.values()], pa.uint64()),
                "updated": pa.array([now] * len(changed), pa.timestamp("us")),
            }
        )

    def _write_seqs(self, changed: dict[str, AgentSeq], now: datetime, into_side: bool = False) -> None:
        # one statement from Arrow: executemany upserts row by row (60% of the writer with many agents)
        self.con.register("_c4_seq_in", self._seq_rows(changed, now))
        if into_side:
            self.con.execute(_seq_upsert_sql(f"{side_store.SIDE_DB}.{SEQ_TABLE}", "_c4_seq_in"))
        else:
            self.con.execute(self._seq_insert_sql())
        self.con.unregister("_c4_seq_in")

    def _into_side(self) -> bool:
        """Whether this commit goes to the side file (called under the lock): a checkpoint runs, or the
        side file still holds earlier commits that could not be moved yet (so commits stay in order)."""
        if not self.side:
            return False
        if self._side_dirty and not self.diverting:
            try:
                self._settle_locked()
            except duckdb.Error as exc:  # e.g. a full disk: the rows stay (durable) in the side file
                log.warning("moving the side file's rows failed; commits stay there error=%s", exc)
                self._reattach_side_if_given_up(exc)
        if self._side_moved:  # into the store (waiting for a checkpoint under way): see _side_moved
            return False
        return self.diverting or self._side_dirty

    def _seq_insert_sql(self) -> str:
        """The statement storing the registered ``_c4_seq_in`` rows: one row per agent, replaced."""
        return _seq_upsert_sql(SEQ_TABLE, "_c4_seq_in")

    def _create_schema(self) -> None:
        con = self.con
        self._create_seq_table()
        for spec in self.catalogue:
            con.execute(spec.ddl())
            existing = {r[0] for r in con.execute(f'DESCRIBE "{spec.name}"').fetchall()}
            for col in spec.columns:  # additive schema evolution: new catalogue columns appear
                if col.name not in existing:
                    con.execute(f'ALTER TABLE "{spec.name}" ADD COLUMN "{col.name}" {col.sql_type}')
                    log.info("column added table=%s column=%s", spec.name, col.name)
            view = spec.rate_view_ddl()
            if view:
                self._create_view(view)
        for shape in self.catalogue.element_views.values():  # a wide table read one row per element
            migrate = self.catalogue[shape.stored_in].migrate_from_element_table_sql(con)
            if migrate:  # a store from before the table was wide: its per-element rows move in once
                con.execute(migrate)
                con.execute(f'DROP TABLE "{shape.name}"')
                log.info("table made wide table=%s from=%s", shape.stored_in, shape.name)
            self._create_view(self.catalogue[shape.stored_in].element_view_ddl())
            self._create_view(shape.rate_view_ddl())
        for shared in self.catalogue.views.values():
            self._create_view(shared.ddl())

    def _create_view(self, ddl: str) -> None:
        self.con.execute(ddl)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor for a reader thread."""
        return self.con.cursor()

    def _query_instance(self) -> duckdb.DuckDBPyConnection:
        """The connection of the DuckDB instance that runs untrusted SQL (the store's own here)."""
        return self.con

    def _read_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for untrusted SQL (the lake's comes from a read-only instance)."""
        return self.cursor()

    def query_memory_used(self) -> int:
        """Bytes DuckDB holds for running operators, of every query (the diagnosis' too)."""
        cur = self._query_instance().cursor()
        try:
            tags = ", ".join(f"'{t}'" for t in QUERY_MEMORY_TAGS)
            row = cur.execute(
                f"SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() WHERE tag IN ({tags})"
            ).fetchone()
            return int(row[0]) if row else 0
        finally:
            cur.close()

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor inside a read-only transaction, for untrusted SQL: DuckDB refuses any write it tries.

        The file cannot be opened a second time read-only: not by another process while this one
        writes it (file lock), nor by another instance in this process (one handle per file).
        """
        cur = self._read_cursor()
        try:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            yield cur
        finally:
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass  # the statement ended the transaction (refused before it gets here) or failed
            cur.close()

    def commit(self, batches: Sequence[PendingBatch]) -> list[CommitResult]:
        """Commit batches in one transaction; on failure fall back to one transaction each.

        A sequenced batch whose seq is not above the agent's last committed seq is a
        duplicate: acknowledged, not inserted. A batch that fails breaks its stream: no later
        batch of that stream commits (see ``c4.collector.sequence``). Every batch must be
        checked (``c4.collector.batch_checks.commit_checked`` checks the ``unchecked`` first).
        While DuckDB has invalidated the store (``invalidated``) each commit first tries to open it
        again; until that works every batch fails at once (its agent sends it again).
        """
        with self._lock:
            if not self._usable():
                return self._fail_all(batches)
            try:
                return self._commit_group(batches)
            except Exception as exc:
                if self._invalidated_by(exc):
                    if not self._usable():
                        return self._fail_all(batches)
                    try:  # opened again: the group as it was
                        return self._commit_group(batches)
                    except Exception as again:
                        exc = again
                log.warning("group commit failed, retrying batches one by one error=%s", exc)
                # the tables' columns are read again: a lake's may have changed under this collector
                # (another one added a column, and the positional insert no longer fits)
                self._columns_of.clear()
                self._reattach_side_if_given_up(exc)
                results = []
                for b in batches:
                    try:
                        results += self._commit_group([b])
                    except PERMANENT_ERRORS as one_exc:
                        log.error(
                            "batch refused at commit agent=%s seq=%d table=%s error=%s",
                            b.agent_id,
                            b.seq,
                            b.spec.name,
                            one_exc,
                        )
                        results.append(CommitResult(error=f"rows cannot be stored: {one_exc}", refused=True))
                    except Exception as one_exc:
                        self.book.failed(b)
                        results.append(CommitResult(error=f"commit failed: {one_exc}"))
                return results

    # --- an instance DuckDB invalidated ------------------------------------------
    def _invalidated_by(self, exc: BaseException, probe: bool = False) -> bool:
        """Whether ``exc`` came from DuckDB invalidating the store's own file (a checkpoint of it failed,
        e.g. on a full disk), recorded in ``invalidated``. The side file alone is attached again
        instead (``_reattach_side_if_given_up``). Called under the lock."""
        if not probe and "invalidated" not in str(exc):
            return False
        try:
            self.con.execute(f"SELECT count(*) FROM {SEQ_TABLE}").fetchone()
            return False  # the store's own file still answers
        except duckdb.Error as failed:
            self.invalidated = str(exc).replace("\n", " ")
            log.error(
                "DuckDB invalidated the store (every statement fails until it is opened again; the "
                "write-ahead log keeps every acknowledged commit) error=%s probe=%s",
                self.invalidated,
                str(failed).splitlines()[0],
            )
            return True

    def note_failure(self, exc: BaseException) -> None:
        """A periodic task's read or write on this store failed with ``exc``: nothing to do for a file
        store (a commit finds out whether DuckDB invalidated it); a lake's instance may need replacing."""

    def checkpoint_failed(self, exc: BaseException) -> None:
        """From the checkpointer: a checkpoint failed; if DuckDB invalidated the store, the idle writer
        opens it again (``settle``) without waiting for a commit to find out."""
        with self._lock:
            if not self.invalidated:
                self._invalidated_by(exc, probe=True)

    def _usable(self) -> bool:
        """The store answers: it was never invalidated, or it was opened again now. Under the lock."""
        return not self.invalidated or self._reopen()

    def _reopen(self) -> bool:
        """Open the store's file again after DuckDB invalidated it: DuckDB replays the write-ahead log, so
        every commit acknowledged before is there; the side file is attached again and its rows moved in,
        as at a restart. The sequence book stays as it is (it holds what was committed, and which agent
        streams broke meanwhile). False while that fails (the disk still full), tried again later."""
        if time.monotonic() < self._reopen_after:
            return False
        self._reopen_after = time.monotonic() + REOPEN_RETRY_S
        try:
            self.con.close()
        except duckdb.Error:
            pass
        try:
            self.con = self._connect()
            self._configure()
            self._side_written.clear()
            self._side_dirty = self._side_moved = self.diverting = False
            if self.side or side_store.side_path(self.path).exists():
                self._open_side()
                self.side_usable = True
            self._lock_down()
        except (duckdb.Error, OSError) as exc:
            log.error("opening the invalidated store again failed; commits fail until it opens error=%s", exc)
            return False
        log.warning(
            "store opened again after DuckDB invalidated it reopens=%d was=%s",
            self.reopens + 1,
            self.invalidated,
        )
        self.invalidated = ""
        self.reopens += 1
        return True

    def _fail_all(self, batches: Sequence[PendingBatch]) -> list[CommitResult]:
        """Every batch failed, its stream broken (the agent sends it again): the store cannot be written."""
        for b in batches:
            self.book.failed(b)
        error = f"store unavailable until it is opened again: {self.invalidated}"
        return [CommitResult(error=error)] * len(batches)

    def mark_failed(self, batches: Sequence[PendingBatch]) -> None:
        """Batches that failed outside ``commit`` (the writer's last resort): their streams are broken."""
        with self._lock:
            for b in batches:
                self.book.failed(b)

    def _commit_group(self, batches: Sequence[PendingBatch]) -> list[CommitResult]:
        verdicts, planned = self.book.plan(batches)
        for b in batches:
            for agent_id, epoch in b.opens:  # a Hello's epoch: as if open_agent ran right after this commit
                state, changed = self.book.open(agent_id, epoch)
                if changed:
                    planned[agent_id] = state
        results: list[CommitResult] = []
        by_table: dict[str, list[PendingBatch]] = {}
        for b, verdict in zip(batches, verdicts, strict=True):
            if verdict is not None:
                results.append(CommitResult.of(verdict, b.clock))
                continue
            by_table.setdefault(b.spec.name, []).append(b)
            results.append(CommitResult(rows=b.num_rows, clock=b.clock))
        side = self._into_side()
        prefix = f"{side_store.SIDE_DB}." if side else ""
        with self._transaction():
            # one INSERT per target table: DuckDB appends a large Arrow table in parallel
            for group in by_table.values():
                spec = group[0].spec
                data = _decoded_together(group) or _one_chunk([b.rows_table() for b in group])
                if not data.num_rows:
                    continue
                target = f'{prefix}"{spec.name}"'
                if self._table_columns(spec.name, side) == data.column_names:
                    self._insert_in_order(target, data)
                else:  # a store whose table took new columns at its end, in another order
                    self._insert_by_name(target, spec, data)
                if side:
                    self._side_written.add(spec.name)
            if planned:
                self._write_seqs(planned, _utcnow(), into_side=side)
        if side:
            self._side_dirty = True
        self.book.committed(planned)
        return results

    def _insert_in_order(self, target: str, data: pa.Table) -> None:
        """Append ``data`` to a table whose columns are the same, in the same order: by position, from
        the table's Arrow C stream. No SQL to parse, no view to register and drop, no pyarrow dataset
        scanner: half a small INSERT's cost, and a commit holds one INSERT per table
        (``c4 bench commit``)."""
        self.con.from_arrow(data.__arrow_c_stream__()).insert_into(target)

    def _insert_by_name(self, target: str, spec: TableSpec, data: pa.Table) -> None:
        """Append ``data`` to a table by column name (its stored order may differ from the catalogue's)."""
        self.con.register("_c4_in", data)
        try:
            cols = ", ".join(f'"{c}"' for c in spec.column_names)
            self.con.execute(f"INSERT INTO {target} ({cols}) SELECT {cols} FROM _c4_in")
        finally:
            self.con.unregister("_c4_in")

    def _table_columns(self, table: str, side: bool) -> list[str]:
        """The stored columns of a table the writer inserts into (the store's, or the side file's), in
        order, as the writing connection sees them (kept until the schema or connection changes)."""
        columns = self._columns_of.get((table, side))
        if columns is None:
            database = side_store.SIDE_DB if side else None
            columns = self._columns_of[(table, side)] = side_store.side_columns(self.con, table, database)
        return columns

    def delete_older_than(self, cutoff_expr: str) -> dict[str, int]:
        """Retention: delete rows whose time column is older than a SQL timestamp expression."""
        return self._delete_where("<", cutoff_expr)

    def delete_newer_than(self, limit_expr: str) -> dict[str, int]:
        """Retention: delete rows whose time column is later than a SQL timestamp expression."""
        return self._delete_where(">", limit_expr)

    def _delete_where(self, op: str, time_expr: str) -> dict[str, int]:
        """Delete, in every table kept under retention, the rows whose time is ``op`` the expression."""
        deleted: dict[str, int] = {}
        with self._lock:
            for spec in self.catalogue:
                if not spec.retention or not spec.time_column:
                    continue
                n = self.con.execute(
                    f'DELETE FROM "{spec.name}" WHERE "{spec.time_column}" {op} {time_expr}'
                ).fetchone()
                if n and n[0]:
                    deleted[spec.name] = int(n[0])
        return deleted

    def checkpoint(self) -> None:
        """Flush the WAL into the database file."""
        with self._lock:
            self.con.execute("CHECKPOINT")

    def close(self) -> None:
        """Checkpoint and close the file."""
        if self.checkpointer is not None:
            self.checkpointer.stop()
        with self._lock:
            try:
                if self.side:
                    self.diverting = False
                    self._settle_locked()
                self._checkpoint_waiting(CLOSE_CHECKPOINT_WAIT_S)
            finally:
                self.con.close()

    def _checkpoint_waiting(self, wait_s: float) -> None:
        """CHECKPOINT once another cursor's write transaction is over (``checkpoint_when_free``), waiting at
        most ``wait_s``; then one last try, whose refusal is raised."""
        deadline = time.monotonic() + wait_s
        if (
            checkpoint_when_free(self.con, lambda: time.monotonic() >= deadline, CLOSE_CHECKPOINT_RETRY_S)
            is None
        ):
            self.con.execute("CHECKPOINT")
