"""The rollup thread rests between chunks (``rollup_pace``): for the CPU time it used times
(1 / duty - 1), only while its pass is within its budget, and only on the thread that started a pass."""

from __future__ import annotations

import asyncio
import threading

import pytest

from c4.collector import rollup, rollup_pace


class FakeClock:
    """thread_time, monotonic and sleep of rollup_pace, moved by hand."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.now_s = 100.0
        self.slept: list[float] = []

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now_s += s


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(rollup_pace.time, "thread_time", lambda: c.cpu_s)
    monkeypatch.setattr(rollup_pace.time, "monotonic", lambda: c.now_s)
    monkeypatch.setattr(rollup_pace.time, "sleep", c.sleep)
    yield c
    rollup_pace.end_pass()


def test_a_paced_thread_rests_for_its_cpu_times_the_idle_share(clock):
    rollup_pace.start_pass(duty=0.25, budget_s=30.0)
    clock.cpu_s += 0.2
    clock.now_s += 0.2
    assert rollup_pace.rest() == pytest.approx(0.6)  # 0.2 s on the CPU at a quarter's duty: 0.6 s of rest
    clock.cpu_s += 0.1
    assert rollup_pace.rest() == pytest.approx(0.3)  # only the CPU since the last rest counts
    assert clock.slept == pytest.approx([0.6, 0.3])


def test_rests_stop_at_the_passs_budget(clock):
    rollup_pace.start_pass(duty=0.5, budget_s=1.0)
    clock.cpu_s += 0.8
    clock.now_s += 0.8
    assert rollup_pace.rest() == pytest.approx(0.2)  # cut to what is left of the budget
    clock.cpu_s += 0.5
    assert rollup_pace.rest() == 0.0  # past it: full speed, so a pass never falls behind its period
    assert clock.slept == pytest.approx([0.2])


def test_an_unpaced_thread_never_rests(clock):
    clock.cpu_s += 5.0
    assert rollup_pace.rest() == 0.0
    rollup_pace.start_pass(duty=0.5, budget_s=30.0)
    rollup_pace.end_pass()
    clock.cpu_s += 5.0
    assert rollup_pace.rest() == 0.0
    assert clock.slept == []


def test_the_collectors_rollup_pass_is_paced_on_its_thread_and_the_result_is_the_same(tmp_path, monkeypatch):
    """Rollups.run computes on its thread with pacing on, resting after each chunk; the same slice
    computed directly (unpaced) gives the same rows."""
    from datetime import UTC, datetime, timedelta

    import numpy as np
    import pyarrow as pa

    from c4.catalogue import load
    from c4.collector.ingest import Metrics
    from c4.collector.store import PendingBatch, Store
    from c4.collector.writer import Writer

    rests: list[tuple[str, bool]] = []
    real_rest = rollup_pace.rest

    def rest() -> float:
        rests.append((threading.current_thread().name, getattr(rollup_pace._paced, "duty", None) is not None))
        return real_rest()

    monkeypatch.setattr(rollup_pace, "rest", rest)
    monkeypatch.setattr(rollup, "ROWS_PER_CHUNK", 50)
    monkeypatch.setattr(rollup_pace, "DUTY", 0.9)  # a short rest: the test is about where it happens
    cat = load()
    spec = cat["host_memory"]
    store = Store(tmp_path / "c4.duckdb", cat)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    n = 600  # 10 nodes x 60 s
    ts = np.array([(start + timedelta(seconds=i % 60)).timestamp() * 1e6 for i in range(n)], dtype=np.int64)
    data = {}
    for c, f in zip(spec.columns, spec.arrow_schema, strict=True):
        if c.name == "ts":
            data[c.name] = pa.array(ts, pa.timestamp("us"))
        elif c.name == "node":
            data[c.name] = pa.array([f"n{i // 60}" for i in range(n)])
        elif pa.types.is_string(f.type):
            data[c.name] = pa.array(["x"] * n)
        else:
            data[c.name] = pa.array(np.arange(n) % 50, type=f.type)
    table = pa.table(data, schema=spec.arrow_schema)
    (result,) = store.commit([PendingBatch("a", 1, spec, table, stream=1)])
    assert not result.error
    writer = Writer(store)
    rollups = rollup.Rollups(store, writer, Metrics(), recheck_s=300.0)
    step = next(s for s in rollup.steps_of(cat) if s.target == "host_memory_1m")
    try:
        monkeypatch.setattr(rollup, "_now", lambda: start + timedelta(minutes=2))
        asyncio.run(rollups.run())
        got = store.cursor().execute("SELECT * FROM host_memory_1m ORDER BY ALL").to_arrow_table()
        direct = step.compute(store.cursor(), start, start + timedelta(minutes=1), cat["host_memory_1m"])
    finally:
        rollups.close()
        writer.close()
        store.close()
    paced = [name for name, on in rests if on]
    # a node's 60 rows are over a chunk of 50: a chunk (and a rest) per node, all on the rollup thread
    assert len(paced) >= 9 and all(name.startswith("c4-rollup") for name in paced)
    assert got.num_rows == direct.num_rows == 10
    order = [(c, "ascending") for c in direct.column_names]
    assert got.select(direct.column_names).sort_by(order).equals(direct.sort_by(order))
