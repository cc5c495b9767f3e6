"""A query cancelled in the gaps around its start still stops: a CI run hung here for good.

``c4 sql`` readers that go away interrupt their query (``QueryRunner._stop``). Two gaps lost that
interrupt, and a query that never ends then held its thread and its running slot for good: every later
query waited behind it, and the collector could not stop (``test_hostile_sql_heavy`` under CI load).
1. The reader left while the query waited for the store's cursor: the stop found no cursor to interrupt,
   and the query started anyway.
2. The reader left after the cursor was handed over but before the statement began: DuckDB clears an
   interrupt when a query begins.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from c4.catalogue import load
from c4.collector import queries
from c4.collector.ingest import Metrics
from c4.collector.queries import QueryFailed, QueryRunner
from c4.collector.store import Store

ENDLESS = "SELECT count(*) FROM range(1000000000000000) t(i) WHERE i % 7 = 3"


@pytest.fixture
def runner(tmp_path):
    store = Store(tmp_path / "c4.duckdb", load(), threads=1)
    qr = QueryRunner(store, Metrics(), max_running=1, max_queued=1, memory_bytes=0)
    yield qr
    qr.close()
    store.close()


def _stop_the_only_query(qr: QueryRunner) -> None:
    with qr._lock:
        (q,) = qr._admitted
        qr._stop(q, "gone")


async def _run(qr: QueryRunner, sql: str):
    return [chunk async for chunk in qr.run(sql, 10, 600.0)]


def _then_select_1(qr: QueryRunner) -> list:
    """The next query runs: the stopped one gave its thread and slot back."""
    return asyncio.run(asyncio.wait_for(_run(qr, "SELECT 1"), timeout=30))


def test_a_query_stopped_while_it_waits_for_the_store_does_not_start(runner, monkeypatch):
    real = runner.store.reading

    @contextlib.contextmanager
    def reading():
        _stop_the_only_query(runner)  # the reader left just before the cursor was handed over
        with real() as cur:
            yield cur

    monkeypatch.setattr(runner.store, "reading", reading)
    with pytest.raises(QueryFailed) as err:
        asyncio.run(asyncio.wait_for(_run(runner, ENDLESS), timeout=30))
    assert err.value.code == grpc.StatusCode.CANCELLED
    monkeypatch.setattr(runner.store, "reading", real)
    assert len(_then_select_1(runner)) == 1


def test_an_interrupt_before_the_statement_begins_is_sent_again(runner, monkeypatch):
    real = runner._stream

    def stream(cur, q, statement, max_rows, put):
        _stop_the_only_query(runner)  # interrupts the cursor while no statement runs on it: lost
        return real(cur, q, statement, max_rows, put)

    monkeypatch.setattr(runner, "_stream", stream)
    with pytest.raises(QueryFailed) as err:
        asyncio.run(asyncio.wait_for(_run(runner, ENDLESS), timeout=30))
    assert err.value.code == grpc.StatusCode.CANCELLED
    monkeypatch.setattr(runner, "_stream", real)
    assert len(_then_select_1(runner)) == 1
    assert queries.WATCH_INTERVAL_S < 1  # the watchdog's next look sent it again
