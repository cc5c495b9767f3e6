"""The lake's file upkeep: small Parquet files merged, old snapshots expired and the files they freed
deleted from the data path, every row still there, while another shard keeps committing. A real
PostgreSQL catalog and Parquet files on disk."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError
from testkit.postgres import Postgres

from c4.catalogue import load
from c4.collector.lake import LakeStore
from c4.collector.lake_upkeep_process import UpkeepProcessError
from c4.collector.store import PendingBatch
from c4.config import CollectorConfig

CATALOGUE = load()


@pytest.fixture
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


def beats(agent: str, seq: int, rows: int) -> PendingBatch:
    spec = CATALOGUE["agent_heartbeat"]
    cols = {c: [None] * rows for c in spec.column_names}
    cols.update(node=[agent] * rows, agent_id=[agent] * rows, tick=list(range(rows)))
    return PendingBatch(agent, seq, spec, pa.Table.from_pydict(cols, schema=spec.arrow_schema))


def parquet_files(data: Path) -> int:
    return sum(1 for _ in data.rglob("*.parquet"))


def test_upkeep_merges_expires_and_deletes_files_and_keeps_every_row(tmp_path, postgres):
    data = tmp_path / "lake-data"
    leader = LakeStore(postgres.url, str(data), CATALOGUE, "a")
    other = LakeStore(postgres.url, str(data), CATALOGUE, "b")
    try:
        for seq in range(1, 31):  # a file per commit (heartbeats, and the shard's sequence rows)
            assert not leader.commit([beats("n1", seq, 50)])[0].error
        for seq in range(1, 6):  # small batches: inlined in the catalog
            assert not other.commit([beats("n2", seq, 3)])[0].error
        on_disk = parquet_files(data)
        stop = threading.Event()
        committed = []

        def keep_committing():  # the other shard goes on while the leader's upkeep runs
            seq = 100
            while not stop.is_set() and seq < 140:
                seq += 1
                result = other.commit([beats("n2", seq, 50)])[0]
                committed.append(result.error or "")

        t = threading.Thread(target=keep_committing)
        t.start()
        try:
            result = leader.upkeep(snapshot_keep_s=0.001, file_keep_s=0.001)
        finally:
            stop.set()
            t.join()
        assert committed and all(not e for e in committed), committed[:3]
        assert result.files_merged >= 30 and result.files_created >= 1
        assert result.inlined_rows_flushed >= 15
        assert result.snapshots_expired > 0 and result.snapshots_after < result.snapshots_before
        assert result.files_deleted >= 30
        assert parquet_files(data) < on_disk, "the merged-away files stayed on disk"
        want = 30 * 50 + 5 * 3 + 50 * len(committed)
        assert leader.cursor().execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0] == want
        assert other.known_seq("n1") == 30  # the bookkeeping survived the merge as well
        # a pass on a quiet lake: a file or so per table is left
        again = leader.upkeep(snapshot_keep_s=0.001, file_keep_s=0.001)
        print(again)
        assert again.files_after <= 3, again
        assert parquet_files(data) == again.files_after
        assert leader.cursor().execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0] == want
    finally:
        leader.close()
        other.close()


def test_a_crashed_upkeep_child_leaves_the_collectors_store_committing(tmp_path, postgres):
    store = LakeStore(postgres.url, str(tmp_path / "data"), CATALOGUE, "a")
    try:
        assert not store.commit([beats("n1", 1, 50)])[0].error
        aborting = [sys.executable, "-c", "import os, sys; sys.stdin.readline(); os.abort()"]
        real, store.upkeep_child.command = store.upkeep_child.command, aborting
        with pytest.raises(UpkeepProcessError, match="SIGABRT"):
            store.upkeep(snapshot_keep_s=1.0, file_keep_s=1.0)
        assert not store.commit([beats("n1", 2, 50)])[0].error
        store.upkeep_child.command = real
        result = store.upkeep(snapshot_keep_s=0.001, file_keep_s=0.001)  # the next pass, a real child
        assert result.files_before >= 2 and result.files_after <= result.files_before
        assert store.cursor().execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0] == 100
    finally:
        store.close()


def test_a_file_keep_shorter_than_a_query_is_refused():
    with pytest.raises(ValidationError, match="lake_file_keep_s"):
        CollectorConfig(lake_file_keep_s=10, query_timeout_s=30)
