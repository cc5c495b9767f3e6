"""The lake's file upkeep: small Parquet files merged, old snapshots expired and the files they freed
deleted from the data path, every row still there, while another shard keeps committing. A real
PostgreSQL catalog and Parquet files on disk."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError
from testkit import small_disk
from testkit.lake_rows import CATALOGUE, beats

from c4.collector import maintenance
from c4.collector.ingest import Metrics
from c4.collector.lake import LakeStore
from c4.collector.lake_upkeep import UpkeepResult, interval_sql, tables_with_inlined_rows
from c4.collector.lake_upkeep_process import UpkeepProcessError
from c4.config import CollectorConfig


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


def test_a_file_keep_shorter_than_a_query_is_refused_on_a_lake_only():
    with pytest.raises(ValidationError, match="lake_file_keep_s"):
        CollectorConfig(lake="postgres://c4@pg/lake", lake_file_keep_s=10, query_timeout_s=30)
    # a collector on its own file deletes no lake files: its long queries are its own business
    assert CollectorConfig(query_timeout_s=7200).query_timeout_s == 7200


def _age(paths, days: float) -> None:
    old = time.time() - days * 86400
    for p in paths:
        os.utime(p, (old, old))


def test_on_a_full_disk_the_steps_that_free_space_still_run_and_no_unlisted_file_is_deleted(
    tmp_path, postgres
):
    """The flush cannot write on a full data disk; the cleanup after it still deletes the merged-away files
    (the space comes back). Old files the catalog never listed are counted and left: an operator's export,
    another lake's file in a shared data path and a killed pass's file look alike to DuckLake."""
    data = small_disk.tmpfs(tmp_path / "disk", "16m")
    store = LakeStore(postgres.url, str(data.path / "it's lake"), CATALOGUE, "a")
    try:
        for seq in range(1, 31):  # a file per commit
            assert not store.commit([beats("n1", seq, 50)])[0].error
        first = store.upkeep(snapshot_keep_s=0.001, file_keep_s=3600)  # merged away, kept an hour on disk
        assert first.files_merged >= 30 and not first.errors, first
        for seq in range(31, 36):  # inlined in the catalog: the next flush must write a file
            assert not store.commit([beats("n1", seq, 3)])[0].error
        table_dir = next((data.path / "it's lake").rglob("agent_heartbeat"))
        export = data.path / "it's lake" / "exports" / "report.parquet"
        export.parent.mkdir()
        export.write_bytes(b"PAR1 an operator's export")
        foreign = table_dir / "ducklake-01a2501b-0000-7000-8000-000000000000.parquet"  # as another lake names
        foreign.write_bytes(b"PAR1 another lake's live file")
        _age([export, foreign], 3)
        data.fill()
        full = store.upkeep(snapshot_keep_s=0.001, file_keep_s=0.001)
        # each table with inlined rows (the heartbeats, the shard's sequence rows) is flushed on its own
        assert sorted(e.split(":")[0] for e in full.errors) == [
            "flush_inlined_data main._c4_agent_seq_a",
            "flush_inlined_data main.agent_heartbeat",
        ], full.errors
        assert all("No space left" in e for e in full.errors)
        assert full.files_deleted >= 30, full  # the steps after the failed one ran
        assert full.orphans_found == 2 and export.exists() and foreign.exists()
        assert full.counters()["lake_upkeep_step_errors"] == 2
        data.free()
        after = store.upkeep(snapshot_keep_s=0.001, file_keep_s=0.001)
        assert not after.errors and after.inlined_rows_flushed >= 15, after
        assert export.exists() and foreign.exists()
        assert store.cursor().execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0] == 30 * 50 + 5 * 3
    finally:
        store.close()
        data.unmount()


def test_keep_times_past_what_sql_can_subtract_are_refused():
    for key in ("lake_snapshot_keep_s", "lake_file_keep_s", "lake_upkeep_timeout_s"):
        for value in (float("inf"), 1e20, 2e9):
            with pytest.raises(ValidationError, match=key):
                CollectorConfig(**{key: value})
    assert CollectorConfig(lake_snapshot_keep_s=1e9, lake_file_keep_s=1e9).lake_file_keep_s == 1e9


def test_interval_sql_has_no_exponent():
    assert interval_sql(1e9) == "INTERVAL '1000000000.000000 seconds'"
    assert interval_sql(0.001) == "INTERVAL '0.001000 seconds'"


def test_a_pass_with_a_failed_step_is_counted_then_fails_the_task():
    """What the other steps did reaches the counters; the task still fails, naming the step."""

    class Lake:  # the store's upkeep as a full data disk left it (the real pass: the full-disk test above)
        def upkeep(self, *keep):
            return UpkeepResult(
                files_deleted=30, errors=["flush_inlined_data: IO Error: No space left on device"]
            )

    metrics = Metrics()
    with ThreadPoolExecutor(1) as pool, pytest.raises(RuntimeError, match="flush_inlined_data: IO Error"):
        asyncio.run(maintenance.lake_upkeep(CollectorConfig(), Lake(), metrics, pool))
    counts = metrics.snapshot()
    assert counts["lake_upkeep_files_deleted"] == 30 and counts["lake_upkeep_step_errors"] == 1


def _inlined_rows_left(cur) -> int:
    """Rows in every inlined table of the catalog (data and deletions), counted by PostgreSQL itself."""
    names = cur.execute(
        "SELECT * FROM postgres_query('__ducklake_metadata_lake', 'SELECT relname FROM pg_class "
        "WHERE relkind = ''r'' AND relname LIKE ''ducklake_inlined_%'' AND relname <> ''ducklake_inlined_data_tables''')"
    ).fetchall()
    return sum(
        cur.execute(f"SELECT count(*) FROM __ducklake_metadata_lake.public.{name}").fetchone()[0]
        for (name,) in names
    )


def test_the_flush_visits_only_tables_with_inlined_rows_or_deletions_and_leaves_none(tmp_path, postgres):
    """The flush is called per table that holds inlined rows or inlined deletions (found by two catalog
    queries), not over the whole lake; after the pass nothing is left inlined and every row reads right.
    An inlined table of a kind the check does not know makes it flush the whole lake."""
    store = LakeStore(postgres.url, str(tmp_path / "data"), CATALOGUE, "a")
    try:
        cur = store.cursor()
        assert not store.commit([beats("n1", 1, 50)])[0].error  # a file
        first = store.upkeep(snapshot_keep_s=3600, file_keep_s=3600)
        assert not first.errors and tables_with_inlined_rows(cur) == [], first
        assert _inlined_rows_left(cur) == 0
        # a deletion of two of the file's rows is inlined; the table holds no inlined rows
        cur.execute("DELETE FROM agent_heartbeat WHERE tick < 2")
        assert tables_with_inlined_rows(cur) == [("main", "agent_heartbeat")]
        assert _inlined_rows_left(cur) == 2
        result = store.upkeep(snapshot_keep_s=3600, file_keep_s=3600)
        assert not result.errors and not result.conflicts, result
        assert _inlined_rows_left(cur) == 0 and tables_with_inlined_rows(cur) == []
        want = (48, sum(range(2, 50)))
        assert cur.execute("SELECT count(*), sum(tick) FROM agent_heartbeat").fetchone() == want

        for seq in range(2, 5):  # inlined rows, and the shard's inlined sequence rows
            assert not store.commit([beats("n2", seq, 3)])[0].error
        assert tables_with_inlined_rows(cur) == [("main", "_c4_agent_seq_a"), ("main", "agent_heartbeat")]
        assert _inlined_rows_left(cur) == 3 * 3 + 3
        result = store.upkeep(snapshot_keep_s=3600, file_keep_s=3600)
        assert not result.errors and not result.conflicts, result
        assert result.inlined_rows_flushed == 9 + 3, result
        assert _inlined_rows_left(cur) == 0 and tables_with_inlined_rows(cur) == []
        want = (want[0] + 9, want[1] + 3 * sum(range(3)))
        assert cur.execute("SELECT count(*), sum(tick) FROM agent_heartbeat").fetchone() == want

        for seq in range(5, 7):
            assert not store.commit([beats("n2", seq, 3)])[0].error
        cur.execute(
            "CALL postgres_execute('__ducklake_metadata_lake', 'CREATE TABLE ducklake_inlined_future_1 (x int)')"
        )
        assert tables_with_inlined_rows(cur) is None  # not known: the whole lake is flushed
        result = store.upkeep(snapshot_keep_s=3600, file_keep_s=3600)
        assert not result.errors and result.inlined_rows_flushed == 6 + 2, result
        assert cur.execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0] == want[0] + 6
    finally:
        store.close()
