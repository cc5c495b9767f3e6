"""A lake's table changing under a running collector: another collector adds a column (a later C4's
catalogue, or an operator's ALTER) while this one keeps committing small (inlined) batches, and an upkeep
pass flushes them. DuckLake 1.5.5 then fails in every DuckDB instance that had read the table's inlined
rows of both schema versions (duckdb/ducklake#1225, #1359): internally, or on every later read of the
table, and DuckDB aborts the process when a transaction of such an instance ends. The collector's commits
go on (by column name), and an instance that fails so is replaced: the writer's when a periodic task or a
commit meets the failure, the query instance's at the next query. Each scenario runs in a child process
(an abort would end it, and the test says so). A real PostgreSQL catalog and Parquet files on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCENARIO = r"""
import dataclasses, json, sys
sys.path.insert(0, sys.argv[4])
import duckdb
from testkit.lake_rows import CATALOGUE, beats
from c4.catalogue import Catalogue, ColumnSpec
from c4.collector.lake import LakeStore

SUM = "SELECT count(*), sum(tick) FROM agent_heartbeat"
url, data, how = sys.argv[1], sys.argv[2], sys.argv[3]
a = LakeStore(url, data, CATALOGUE, "a")
out = {"commit_errors": [], "task_failures": 0, "query_failures": 0}
for seq in range(1, 3):
    out["commit_errors"].append(a.commit([beats("n1", seq, 3)])[0].error)
if how == "later_catalogue":  # a later C4's collector starts: its _create_schema adds the column
    spec = CATALOGUE["agent_heartbeat"]
    zz = ColumnSpec("zz", "INTEGER", "", "gauge", "a column a later catalogue adds")
    tables = {**CATALOGUE.tables, spec.name: dataclasses.replace(spec, columns=(*spec.columns, zz))}
    later = Catalogue(tables=tables, views=CATALOGUE.views, element_views=CATALOGUE.element_views)
    b = LakeStore(url, data, later, "b")
else:
    b = LakeStore(url, data, CATALOGUE, "b")
    b.cursor().execute("ALTER TABLE agent_heartbeat ADD COLUMN zz INTEGER")
for seq in range(3, 6):  # this collector's catalogue has no zz
    out["commit_errors"].append(a.commit([beats("n1", seq, 3)])[0].error)
b.cursor().execute("INSERT INTO agent_heartbeat (node, agent_id, tick, zz) VALUES ('n3', 'n3', 100, 1)")
out["before"] = a.cursor().execute(SUM).fetchone()
with a.reading() as cur:
    out["before_query"] = cur.execute(SUM).fetchone()
out["flush_errors"] = a.upkeep(snapshot_keep_s=3600, file_keep_s=3600).errors

def task():  # as a periodic task: its failure is told to the store (run_every)
    try:
        return a.cursor().execute(SUM).fetchone()
    except duckdb.Error as exc:
        out["task_failures"] += 1
        a.note_failure(exc)

def query():  # as an operator's SQL through the collector
    try:
        with a.reading() as cur:
            return cur.execute(SUM).fetchone()
    except duckdb.Error:
        out["query_failures"] += 1

for _ in range(2):
    task(), query()
for seq in range(6, 9):
    out["commit_errors"].append(a.commit([beats("n1", seq, 3)])[0].error)
out["task"], out["query"] = task(), query()
print(json.dumps(out), flush=True)
"""


@pytest.mark.parametrize("how", ["later_catalogue", "raw_alter"])
def test_commits_and_reads_go_on_after_a_column_is_added_and_the_rows_flushed(tmp_path, postgres, how):
    tests = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-c", SCENARIO, postgres.url, str(tmp_path / "data"), how, str(tests)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]  # no abort
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["before"] == out["before_query"] == [5 * 3 + 1, 5 * 3 + 100], out
    assert not out["flush_errors"], out
    assert out["commit_errors"] == [""] * 8, out  # after the ALTER too (by name), and after the flush
    want = [5 * 3 + 1 + 9, 5 * 3 + 100 + 9]
    assert out["task"] == want and out["query"] == want, out  # the replaced instances answer
    assert out["task_failures"] <= 1 and out["query_failures"] <= 1, out  # one failure each at most
