"""The collector's rollups computed in a worker process (``rollup_worker``): a pass writes what a pass on
the collector's thread writes; a worker that dies is replaced by the thread for that slice and by a new
worker for the next; the worker stops with the rollups."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from c4.catalogue import load
from c4.collector import rollup
from c4.collector.ingest import Metrics
from c4.collector.store import PendingBatch, Store
from c4.collector.writer import Writer

CAT = load()
START = datetime(2026, 1, 1, tzinfo=UTC)
NODES = 10


def _minute(store: Store, minute: int, seq: int) -> None:
    """One minute of host_memory rows of NODES nodes, one a second, values moving."""
    spec = CAT["host_memory"]
    n = NODES * 60
    t0 = (START + timedelta(minutes=minute)).timestamp()
    data = {}
    for c, f in zip(spec.columns, spec.arrow_schema, strict=True):
        if c.name == "ts":
            data[c.name] = pa.array(((t0 + np.arange(n) % 60) * 1e6).astype(np.int64), pa.timestamp("us"))
        elif c.name == "node":
            data[c.name] = pa.array([f"n{i // 60}" for i in range(n)])
        elif pa.types.is_string(f.type):
            data[c.name] = pa.array(["x"] * n)
        else:
            data[c.name] = pa.array((np.arange(n) * (minute + 1)) % 1000, type=f.type)
    (result,) = store.commit(
        [PendingBatch("a", seq, spec, pa.table(data, schema=spec.arrow_schema), stream=1)]
    )
    assert not result.error


def _rolled(store: Store) -> list[dict]:
    cur = store.cursor()
    try:
        return cur.execute("SELECT * FROM host_memory_1m ORDER BY ts, node").to_arrow_table().to_pylist()
    finally:
        cur.close()


def _pass(rollups: rollup.Rollups, monkeypatch, minute: int) -> None:
    """A rollup pass at ``minute`` + 1 past START plus a few seconds: the minutes before are closed."""
    monkeypatch.setattr(
        rollup, "_now", lambda: (START + timedelta(minutes=minute + 1, seconds=5)).replace(tzinfo=None)
    )
    asyncio.run(rollups.run())


def test_a_pass_in_the_worker_writes_what_a_pass_on_the_thread_writes(tmp_path, monkeypatch):
    rolled = {}
    for worker in (False, True):
        store = Store(tmp_path / f"{worker}.duckdb", CAT)
        writer = Writer(store)
        rollups = rollup.Rollups(store, writer, Metrics(), recheck_s=300.0, worker_process=worker)
        try:
            for m in range(3):
                _minute(store, m, m + 1)
            _pass(rollups, monkeypatch, 2)
            if worker:
                assert isinstance(rollups.chunks, rollup.ProcessChunks) and rollups.chunks.started == 1
            rolled[worker] = _rolled(store)
        finally:
            rollups.close()
            writer.close()
            store.close()
    assert len(rolled[True]) == 3 * NODES and rolled[True] == rolled[False]


def test_a_worker_that_dies_is_replaced_and_no_minute_is_missed(tmp_path, monkeypatch):
    store = Store(tmp_path / "c4.duckdb", CAT)
    writer = Writer(store)
    metrics = Metrics()
    rollups = rollup.Rollups(store, writer, metrics, recheck_s=300.0, worker_process=True)
    try:
        _minute(store, 0, 1)
        _pass(rollups, monkeypatch, 0)
        (pid,) = rollups.chunks.worker_pids()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.05)
        _minute(store, 1, 2)
        _pass(rollups, monkeypatch, 1)  # the slice is computed on the thread instead
        assert metrics.snapshot().get("rollup_worker_restarts") == 1
        _minute(store, 2, 3)
        _pass(rollups, monkeypatch, 2)  # and the next pass has a new worker
        assert rollups.chunks.started == 2 and rollups.chunks.worker_pids() != [pid]
        assert {r["ts"].minute for r in _rolled(store)} == {0, 1, 2}
        assert len(_rolled(store)) == 3 * NODES
    finally:
        rollups.close()
        writer.close()
        store.close()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_the_worker_runs_below_the_collectors_priority_and_stops_with_the_rollups(tmp_path, monkeypatch):
    store = Store(tmp_path / "c4.duckdb", CAT)
    writer = Writer(store)
    rollups = rollup.Rollups(store, writer, Metrics(), recheck_s=300.0, worker_process=True)
    try:
        _minute(store, 0, 1)
        _pass(rollups, monkeypatch, 0)
        (pid,) = rollups.chunks.worker_pids()
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, own + rollup.ROLLUP_NICE)
    finally:
        rollups.close()
        writer.close()
        store.close()
    deadline = time.monotonic() + 10
    while _state(pid) not in ("", "Z") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _state(pid) in ("", "Z")  # gone (or waiting to be reaped)
