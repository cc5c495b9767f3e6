"""The lake's file upkeep: small Parquet files merged, old snapshots expired and the files they freed
deleted from the data path, every row still there, while another shard keeps committing. A real
PostgreSQL catalog and Parquet files on disk."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError
from testkit.postgres import Postgres

from c4.catalogue import load
from c4.collector.lake import LakeStore
from c4.collector.lake_upkeep import METADATA
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


def _age(paths, days: float) -> None:
    old = time.time() - days * 86400
    for p in paths:
        os.utime(p, (old, old))


def test_upkeep_deletes_old_files_no_commit_listed_and_nothing_else(tmp_path, postgres):
    data = tmp_path / "lake-data"
    store = LakeStore(postgres.url, str(data), CATALOGUE, "a")
    try:
        for seq in range(1, 4):
            assert not store.commit([beats("n1", seq, 50)])[0].error
        listed = sorted(data.rglob("*.parquet"))
        _age(listed, 3)  # the catalog's own files, old: they must stay all the same
        table_dir = listed[0].parent
        old_orphan = table_dir / "ducklake-left-by-a-killed-pass.parquet"  # as a killed child leaves it
        old_orphan.write_bytes(b"PAR1 not committed")
        _age([old_orphan], 2)
        young_orphan = table_dir / "ducklake-commit-in-flight.parquet"  # a commit writing right now
        young_orphan.write_bytes(b"PAR1 in flight")
        elsewhere = table_dir / "notes.txt"  # not DuckLake's: never touched
        elsewhere.write_text("an operator's file")
        _age([elsewhere], 3)
        result = store.upkeep(snapshot_keep_s=3600, file_keep_s=3600, orphan_keep_s=86400)
        assert result.orphans_deleted == 1 and not result.orphans_refused, result
        assert result.counters()["lake_upkeep_orphans_deleted"] == 1
        assert not old_orphan.exists()
        assert young_orphan.exists() and elsewhere.exists()
        assert all(p.exists() for p in listed), "a file the catalog lists was deleted"
        assert store.cursor().execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0] == 150
        assert store.known_seq("n1") == 3
    finally:
        store.close()


def test_orphans_named_like_listed_files_are_not_deleted(tmp_path, postgres):
    """A catalog whose paths do not lead to the files (here one file's path rewritten to another directory,
    as a data path spelled otherwise would): DuckLake alone would delete that live file; upkeep refuses."""
    data = tmp_path / "lake-data"
    store = LakeStore(postgres.url, str(data), CATALOGUE, "a")
    try:
        assert not store.commit([beats("n1", 1, 50)])[0].error
        files = sorted(data.rglob("*.parquet"))
        _age(files, 3)
        live = next(p for p in files if p.parent.name == "agent_heartbeat")
        store.con.execute(
            f"UPDATE {METADATA}.ducklake_data_file SET path = ?, path_is_relative = false "
            "WHERE path = ? AND end_snapshot IS NULL",
            [str(tmp_path / "spelled-otherwise" / live.name), live.name],
        )
        result = store.upkeep(snapshot_keep_s=3600, file_keep_s=3600, orphan_keep_s=86400)
        assert result.orphans_deleted == 0
        assert live.name in result.orphans_refused and "lake_data_path" in result.orphans_refused
        assert result.counters()["lake_upkeep_orphans_refused"] == 1
        assert all(p.exists() for p in files)
    finally:
        store.close()


def test_an_orphan_keep_shorter_than_a_pass_may_run_is_refused():
    with pytest.raises(ValidationError, match="lake_orphan_keep_s"):
        CollectorConfig(lake_orphan_keep_s=600, lake_upkeep_timeout_s=3600)
    assert CollectorConfig(lake_orphan_keep_s=3600, lake_upkeep_timeout_s=3600).lake_orphan_keep_s == 3600
