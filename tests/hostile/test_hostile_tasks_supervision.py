"""A periodic job that raises, even a Rust panic (BaseException), is logged, counted, retried and visible."""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from datetime import datetime

import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families
from testkit.procs import free_port

from c4.collector.server import Collector
from c4.collector.tasks import BACKOFF_MAX_S, TaskHealth
from c4.config import CollectorConfig


def panic() -> None:
    """What polars does with a timestamp past its range: a pyo3 PanicException (not an Exception)."""
    str(pl.DataFrame({"ts": pl.Series([2**63 - 1]).cast(pl.Datetime("us"))}))


def test_a_polars_panic_is_a_base_exception():
    with pytest.raises(BaseException) as info:
        panic()
    assert not isinstance(info.value, Exception)  # why `except Exception` let it kill the loop


def test_failing_task_is_logged_counted_retried_and_exported(tmp_path, caplog):
    port = free_port()
    cfg = CollectorConfig(
        listen="127.0.0.1:0",
        db=tmp_path / "c4.duckdb",
        diagnose_interval_s=0,
        metrics_interval_s=3600,
        metrics_listen=f"127.0.0.1:{port}",
    )
    calls = []

    async def probe() -> None:
        calls.append(len(calls))
        if len(calls) <= 2:
            panic()

    async def scenario() -> tuple[dict, list, str]:
        col = Collector(cfg)
        await col.start()
        try:
            task = asyncio.create_task(col._every(0.01, probe, "probe"))
            while len(calls) < 4:
                await asyncio.sleep(0.01)
            health = col.tasks["probe"]
            seen = {
                "failures": health.failures,
                "consecutive": health.consecutive_failures,
                "error": health.last_error,
                "success": health.last_success,
                "alive": not task.done(),
            }
            task.cancel()
            await col.snapshot_metrics()
            rows = (
                col.store.cursor()
                .execute(
                    "SELECT task, state, failures, consecutive_failures, last_error FROM collector_tasks "
                    "WHERE task = 'probe'"
                )
                .fetchall()
            )
            loop = asyncio.get_running_loop()
            text = await loop.run_in_executor(
                None, lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
            )
            return seen, rows, text.decode()
        finally:
            await col.stop()

    with caplog.at_level(logging.ERROR, logger="c4.collector.tasks"):
        seen, rows, text = asyncio.run(scenario())
    assert seen["alive"] and seen["failures"] == 2 and seen["consecutive"] == 0
    assert "PanicException" in seen["error"] and isinstance(seen["success"], datetime)
    failed = [r for r in caplog.records if "periodic task failed task=probe" in r.getMessage()]
    assert len(failed) == 2 and all(r.exc_info for r in failed)  # each with its traceback
    assert rows == [("probe", "ok", 2, 0, seen["error"])]
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    failures = {s.labels["task"]: s.value for s in fams["c4_collector_task_failures"].samples}
    assert failures["probe"] == 2 and failures["retention"] == 0
    assert {s.labels["task"] for s in fams["c4_collector_task_last_success_timestamp_seconds"].samples} >= {
        "probe",
        "retention",
        "metrics_snapshot",
    }


def test_backoff_doubles_per_consecutive_failure_up_to_a_bound():
    h = TaskHealth("x", 10.0)
    assert h.delay_s() == 10.0
    waits = []
    for _ in range(6):
        h.failed(RuntimeError("boom"), datetime(2026, 1, 1))
        waits.append(h.delay_s())
    assert waits == [20.0, 40.0, 80.0, BACKOFF_MAX_S, BACKOFF_MAX_S, BACKOFF_MAX_S]
    h.succeeded(datetime(2026, 1, 1))
    assert h.delay_s() == 10.0 and h.state == "ok"
    assert (
        TaskHealth("slow", 600.0, consecutive_failures=3).delay_s() == 600.0
    )  # never faster than its period


def test_an_aligned_task_runs_at_the_clocks_multiples_of_its_period_plus_its_offset():
    """The rollups run 15 s after each minute on the clock, not a period after the last pass ended: those
    drifted (~23 s a pass at 2,000 nodes) until a pass found two minutes closed and rolled both at once."""
    from c4.collector.tasks import until_aligned_s

    assert until_aligned_s(1000.0, 60.0, 15.0) == 35.0  # 1000 -> 1035 (= 17 x 60 + 15)
    assert until_aligned_s(1035.0, 60.0, 15.0) == 60.0  # on a multiple: the next one
    assert abs(until_aligned_s(1034.9, 60.0, 15.0) - 0.1) < 1e-9
    h = TaskHealth("rollup", 60.0, aligned_offset_s=15.0)
    assert h.delay_s(now_s=1000.0) == 35.0 and h.delay_s(now_s=1090.0) == 5.0  # 1090 -> 1095
    for _ in range(2):  # a failing run backs off as any task's does, then aligns again
        h.failed(RuntimeError("boom"), datetime(2026, 1, 1))
    assert h.delay_s(now_s=1000.0) == BACKOFF_MAX_S
    h.succeeded(datetime(2026, 1, 1))
    assert h.delay_s(now_s=1000.0) == 35.0


def test_the_collectors_rollup_task_is_aligned_to_the_minute(tmp_path):
    from c4.collector.rollup import ROLLUP_OFFSET_S, rollup_offset_s

    async def declared() -> tuple:
        col = Collector(CollectorConfig(listen="127.0.0.1:0", db=tmp_path / "c4.duckdb"))
        await col.start()
        try:
            health = col.leader_tasks._health
            return (
                health["rollup"].period_s,
                health["rollup"].aligned_offset_s,
                health["retention"].aligned_offset_s,
            )
        finally:
            await col.stop()

    # the rollups 15 s after each minute; the others as before
    assert asyncio.run(declared()) == (60.0, ROLLUP_OFFSET_S, None) and ROLLUP_OFFSET_S == 15.0
    assert rollup_offset_s(20.0) == 5.0  # at most a quarter of a shorter interval
