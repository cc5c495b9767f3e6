"""The store appends a batch by position only where the table's stored columns are the catalogue's, in order;
a table whose columns sit in another order (a store from an older catalogue) is written by name."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from c4.catalogue import load
from c4.collector.store import PendingBatch, Store

CATALOGUE = load()
SPEC = CATALOGUE["agent_heartbeat"]


def rows(seq: int) -> pa.Table:
    """Three heartbeat rows whose two text columns differ, so a column mix-up shows."""
    return pa.table(
        {
            "ts": pa.array([1_780_000_000_000_000 + seq * 10 + i for i in range(3)], pa.timestamp("us")),
            "node": [f"node-{seq}-{i}" for i in range(3)],
            "job": [f"job-{seq}-{i}" for i in range(3)],
            "agent_id": ["agent-a"] * 3,
            "boot_ns": pa.array([7, 8, 9], pa.int64()),
            "tick": pa.array([seq * 10 + i for i in range(3)], pa.uint64()),
            "uptime_s": [0.5, 1.5, 2.5],
        },
        schema=SPEC.arrow_schema,
    )


def stored(store: Store, table: str = SPEC.name) -> list[dict]:
    cols = ", ".join(f'"{c}"' for c in SPEC.column_names)
    return store.con.execute(f"SELECT {cols} FROM {table} ORDER BY tick").to_arrow_table().to_pylist()


def commit_three(store: Store) -> list[dict]:
    """Commit batches 1 and 2, then batch 3 while the file checkpoints (into the side file), and move it
    in; every row of the three as the store must hold them."""
    for seq in (1, 2):
        (result,) = store.commit([PendingBatch("agent-a", seq, SPEC, rows(seq), stream=1)])
        assert not result.error, result.error
    store.begin_diversion()
    (result,) = store.commit([PendingBatch("agent-a", 3, SPEC, rows(3), stream=1)])
    assert not result.error, result.error
    store.end_diversion()
    store.settle()  # the side file's rows move into the store
    assert not store.side_pending
    return [r for seq in (1, 2, 3) for r in rows(seq).to_pylist()]


def test_a_fresh_store_appends_by_position_and_every_value_lands_in_its_column(tmp_path):
    store = Store(tmp_path / "a.duckdb", CATALOGUE, background_checkpoints=True)
    try:
        assert store._table_columns(SPEC.name, side=False) == SPEC.column_names  # the by-position path
        assert stored(store) == []
        assert stored(store) == [] and commit_three(store) == stored(store)
    finally:
        store.close()


def test_a_table_whose_columns_sit_in_another_order_is_written_by_name(tmp_path):
    """An older store's table with two text columns swapped: appended by position, node and job would
    silently trade places."""
    db = tmp_path / "old.duckdb"
    swapped = ["ts", "job", "node", "agent_id", "boot_ns", "tick", "uptime_s"]
    types = {c.name: c.sql_type for c in SPEC.columns}
    con = duckdb.connect(str(db))
    con.execute(f"CREATE TABLE {SPEC.name} ({', '.join(f'{c} {types[c]}' for c in swapped)})")
    con.close()
    store = Store(db, CATALOGUE, background_checkpoints=True)
    try:
        assert store._table_columns(SPEC.name, side=False) == swapped
        assert commit_three(store) == stored(store)
    finally:
        store.close()
