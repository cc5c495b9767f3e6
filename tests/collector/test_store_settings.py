"""The store applies its DuckDB settings (threads, checkpoint threshold) and checkpoints in the background."""

from __future__ import annotations

import os
import threading
import time

import duckdb
import numpy as np
import pyarrow as pa

from c4.catalogue import load
from c4.collector.checkpointer import BACKSTOP_FACTOR
from c4.collector.store import PendingBatch, Store

CATALOGUE = load()


def setting(store: Store, name: str):
    return store.con.execute(f"SELECT current_setting('{name}')").fetchone()[0]


def test_store_threads_and_checkpoint_threshold_are_applied(tmp_path):
    store = Store(tmp_path / "a.duckdb", CATALOGUE, checkpoint_wal_bytes=8 << 20, threads=3)
    try:
        assert setting(store, "threads") == 3  # not the default (one per core but one)
        assert setting(store, "checkpoint_threshold") == "8.0 MiB"
    finally:
        store.close()


def test_store_threads_zero_leaves_a_core_to_the_grpc_loop(tmp_path):
    store = Store(tmp_path / "a.duckdb", CATALOGUE)
    try:
        assert setting(store, "threads") == max(1, len(os.sched_getaffinity(0)) - 1)
    finally:
        store.close()


def test_background_checkpoints_fold_the_wal_while_commits_go_on(tmp_path):
    """With background checkpoints DuckDB's own threshold is only a backstop; the thread folds the WAL
    into the file once it is over the size asked for, and every committed row is still there after."""
    spec = CATALOGUE["agent_heartbeat"]
    db = tmp_path / "b.duckdb"
    store = Store(db, CATALOGUE, checkpoint_wal_bytes=1 << 20, background_checkpoints=True)
    committed = seq = 0
    try:
        assert setting(store, "checkpoint_threshold") == f"{BACKSTOP_FACTOR}.0 MiB"
        deadline = time.monotonic() + 60
        while not store.checkpointer.checkpoints and time.monotonic() < deadline:
            seq += 1
            (result,) = store.commit(
                [PendingBatch("agent-a", seq, spec, heartbeat_rows(spec, seq, 2000), stream=1)]
            )
            assert not result.error and result.rows == 2000
            committed += result.rows
        assert store.checkpointer.checkpoints >= 1 and store.checkpointer.failures == 0
        # commits go on after a background checkpoint, each still exactly once
        (again,) = store.commit(
            [PendingBatch("agent-a", seq, spec, heartbeat_rows(spec, seq, 2000), stream=1)]
        )
        assert again.duplicate
        # the checkpoint is counted before its diversion ends: rows committed meanwhile may still wait
        # in the side file, moved in between two checkpoints
        deadline = time.monotonic() + 30
        while store.side_pending and time.monotonic() < deadline:
            store.settle()
            time.sleep(0.01)
        assert store.con.execute('SELECT count(*) FROM "agent_heartbeat"').fetchone()[0] == committed
    finally:
        store.close()
    assert not store.checkpointer._thread.is_alive()
    reopened = Store(db, CATALOGUE)
    try:
        assert reopened.con.execute('SELECT count(*) FROM "agent_heartbeat"').fetchone()[0] == committed
        assert reopened.known_seq("agent-a") == seq
    finally:
        reopened.close()


def test_store_without_background_checkpoints_starts_no_thread(tmp_path):
    store = Store(tmp_path / "c.duckdb", CATALOGUE, checkpoint_wal_bytes=8 << 20)
    try:
        assert store.checkpointer is None
        assert setting(store, "checkpoint_threshold") == "8.0 MiB"
    finally:
        store.close()


def heartbeat_rows(spec, seq: int, n: int) -> pa.Table:
    """n heartbeat rows of ever new values (so the WAL grows with every commit)."""
    base = seq * n
    return pa.table(
        {
            "ts": pa.array(
                np.arange(base, base + n, dtype=np.int64) * 1000 + 1_780_000_000_000_000, pa.timestamp("us")
            ),
            "node": pa.array([f"node-{i % 97}" for i in range(n)]),
            "job": pa.array(["job"] * n),
            "agent_id": pa.array(["agent-a"] * n),
            "boot_ns": pa.array(np.full(n, 7, dtype=np.int64)),
            "tick": pa.array(np.arange(base, base + n, dtype=np.uint64)),
            "uptime_s": pa.array(np.random.default_rng(seq).random(n)),
        },
        schema=spec.arrow_schema,
    )


def test_collector_config_turns_background_checkpoints_on(tmp_path):
    """``background_checkpoints`` in [collector] reaches the store: its thread runs, and stops with it."""
    import asyncio

    from c4.collector.server import Collector
    from c4.config import CollectorConfig

    async def scenario(on: bool):
        cfg = CollectorConfig(listen="127.0.0.1:0", db=tmp_path / f"{on}.duckdb", background_checkpoints=on)
        col = Collector(cfg)
        await col.start()
        try:
            checkpointer = col.store.checkpointer
            assert (checkpointer is not None) == on
            if on:
                assert checkpointer._thread.is_alive() and checkpointer.wal_bytes == cfg.checkpoint_wal_bytes
        finally:
            await col.stop()
        assert checkpointer is None or not checkpointer._thread.is_alive()

    asyncio.run(scenario(True))
    asyncio.run(scenario(False))


def _row_groups_after_checkpoints(tmp_path, name: str, merge: bool) -> tuple[int, int]:
    """Commit 4 batches of heartbeat rows, each followed by a checkpoint (each writes its rows as one
    partly filled row group); (row groups of the table then, rows)."""
    spec = CATALOGUE["agent_heartbeat"]
    store = Store(tmp_path / name, CATALOGUE, merge_row_groups=merge)
    try:
        for seq in range(1, 5):
            (result,) = store.commit(
                [PendingBatch("agent-a", seq, spec, heartbeat_rows(spec, seq, 40_000), stream=1)]
            )
            assert not result.error
            store.con.execute("CHECKPOINT")
        groups = store.con.execute(
            "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('agent_heartbeat')"
        ).fetchone()[0]
        rows = store.con.execute('SELECT count(*) FROM "agent_heartbeat"').fetchone()[0]
        return groups, rows
    finally:
        store.close()


def test_checkpoints_write_only_new_rows_unless_row_group_merges_are_asked_for(tmp_path):
    """By default a checkpoint does not rewrite the partly filled row groups earlier checkpoints wrote
    (DuckDB's vacuum merges them: at 2,000 nodes that made checkpoints 2-4 s instead of 0.5 s);
    ``merge_row_groups`` gives DuckDB's merging back. Every row is there either way."""
    assert _row_groups_after_checkpoints(tmp_path, "plain.duckdb", merge=False) == (4, 160_000)
    merged_groups, rows = _row_groups_after_checkpoints(tmp_path, "merged.duckdb", merge=True)
    assert rows == 160_000 and merged_groups < 4


def test_collector_config_reaches_the_stores_row_group_merges(tmp_path):
    import asyncio

    from c4.collector.server import Collector
    from c4.config import CollectorConfig

    async def scenario(merge: bool) -> int:
        cfg = CollectorConfig(listen="127.0.0.1:0", db=tmp_path / f"m{merge}.duckdb", merge_row_groups=merge)
        col = Collector(cfg)
        await col.start()
        try:
            return setting(col.store, "max_vacuum_tasks")
        finally:
            await col.stop()

    assert asyncio.run(scenario(False)) == 0
    assert asyncio.run(scenario(True)) > 0  # DuckDB's own default


def test_close_waits_for_another_write_transaction_and_still_checkpoints(tmp_path):
    """A write transaction still open on another cursor (a job finishing as the collector stops) made
    close's CHECKPOINT fail at once ("other write transactions active"), leaving the whole WAL to the
    next start. Close now waits for it to end, then checkpoints: no WAL is left."""
    path = tmp_path / "a.duckdb"
    store = Store(path, CATALOGUE, checkpoint_wal_bytes=1 << 30)
    other = store.cursor()
    other.execute("BEGIN TRANSACTION")
    other.execute("CREATE TABLE late_job (a INTEGER)")
    other.execute("INSERT INTO late_job VALUES (1)")
    finish = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    finish.start()
    try:
        store.close()
    finally:
        finish.join()
    wal = path.with_name(path.name + ".wal")
    assert not wal.exists() or wal.stat().st_size == 0
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("SELECT a FROM late_job").fetchall() == [(1,)]
    finally:
        con.close()
