"""The store's DuckDB settings, and WAL checkpoints taken by a background thread instead of a commit."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
from testkit.wait import wait_for

from c4.catalogue import load
from c4.collector.store import PendingBatch, Store

CATALOGUE = load()


def heartbeats(node: str, ticks: range) -> PendingBatch:
    spec = CATALOGUE["agent_heartbeat"]
    rows = [
        {
            "ts": datetime(2026, 1, 1),
            "node": node,
            "job": "",
            "agent_id": node,
            "boot_ns": 1,
            "tick": t,
            "uptime_s": 0.0,
        }
        for t in ticks
    ]
    return PendingBatch(node, ticks.stop, spec, pa.Table.from_pylist(rows, schema=spec.arrow_schema))


def setting(store: Store, name: str):
    return store.con.execute(f"SELECT current_setting('{name}')").fetchone()[0]


def test_store_threads_and_checkpoint_threshold_are_applied(tmp_path):
    store = Store(tmp_path / "a.duckdb", CATALOGUE, checkpoint_wal_bytes=8 << 20, threads=1)
    try:
        assert setting(store, "threads") == 1
        assert setting(store, "checkpoint_threshold") == "8.0 MiB"
        assert store.checkpointer is None
    finally:
        store.close()


def test_background_checkpoints_fold_the_wal_while_commits_go_on(tmp_path):
    store = Store(
        tmp_path / "b.duckdb", CATALOGUE, checkpoint_wal_bytes=1 << 20, checkpoint_in_background=True
    )
    try:
        # DuckDB's own threshold is only the safety net, at four times the size
        assert setting(store, "checkpoint_threshold") == "4.0 MiB"

        def wal_folded() -> bool:
            return not store.wal_path.exists() or store.wal_path.stat().st_size < 1 << 20

        for seq in range(1, 41):  # ~0.3 MB of WAL per commit: the thread folds it each time it passes 1 MB
            (result,) = store.commit([heartbeats(f"n{seq % 4}", range(seq * 5000, seq * 5000 + 5000))])
            assert result.rows == 5000 and not result.error
            wait_for(wal_folded, what="the WAL folded into the file by the background thread")
        assert store.checkpointer.checkpoints >= 5  # the thread did it, not DuckDB's net at 4 MB
        assert store.con.execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0] == 40 * 5000
    finally:
        store.close()
    reopened = Store(tmp_path / "b.duckdb", CATALOGUE)
    try:  # nothing lost across the checkpoints and the close
        assert (
            reopened.con.execute("SELECT count(DISTINCT tick) FROM agent_heartbeat").fetchone()[0]
            == 40 * 5000
        )
    finally:
        reopened.close()
