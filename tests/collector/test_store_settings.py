"""The store applies its DuckDB settings (threads, checkpoint threshold)."""

from __future__ import annotations

from c4.catalogue import load
from c4.collector.store import Store

CATALOGUE = load()


def setting(store: Store, name: str):
    return store.con.execute(f"SELECT current_setting('{name}')").fetchone()[0]


def test_store_threads_and_checkpoint_threshold_are_applied(tmp_path):
    store = Store(tmp_path / "a.duckdb", CATALOGUE, checkpoint_wal_bytes=8 << 20, threads=3)
    try:
        assert setting(store, "threads") == 3  # not the default (one per core)
        assert setting(store, "checkpoint_threshold") == "8.0 MiB"
    finally:
        store.close()
