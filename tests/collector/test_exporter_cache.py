"""/metrics on a lake serves the store's gauges from a cache refreshed in the background: a scrape
does not wait on the store's queries (but the first), the served gauges catch up once refreshed,
and the collector's own counters are always current. A real store file; the exporter class itself."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from testkit.wait import wait_for

from c4.catalogue import load
from c4.collector.exporter import C4Metrics
from c4.collector.ingest import Metrics
from c4.collector.store import PendingBatch, Store

CATALOGUE = load()


def host_memory(store: Store, node: str) -> None:
    spec = CATALOGUE["host_memory"]
    row = {c: None for c in spec.column_names} | {
        "ts": datetime.now(UTC).replace(tzinfo=None),
        "node": node,
        "job": "",
        "mem_total_bytes": 1 << 30,
    }
    [result] = store.commit([PendingBatch.internal(spec, [row])])
    assert not result.error


class SlowStore:
    """The real store, whose cursors wait for ``gate`` first (a lake's slow planning, made explicit)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = threading.Event()
        self.gate.set()
        self.cursors = 0

    def cursor(self):
        self.cursors += 1
        assert self.gate.wait(60)
        return self.store.cursor()


@pytest.fixture
def parts(tmp_path):
    store = Store(tmp_path / "c4.duckdb", CATALOGUE)
    slow = SlowStore(store)
    counters = Metrics()
    collector = SimpleNamespace(store=slow, metrics=counters, writer=SimpleNamespace(commits=0))
    yield store, slow, counters, collector
    store.close()


def collect(exporter: C4Metrics) -> dict[str, list]:
    """family name -> samples of one scrape."""
    return {f.name: f.samples for f in exporter.collect()}


def nodes(got: dict[str, list]) -> set[str]:
    return {s.labels["node"] for s in got["c4_node_memory_total_bytes"]}


def test_cached_store_gauges_refresh_in_the_background_and_counters_stay_current(parts):
    store, slow, counters, collector = parts
    host_memory(store, "n1")
    exporter = C4Metrics(collector, window_s=300, store_cache_s=0.2)
    assert nodes(collect(exporter)) == {"n1"}  # the first scrape computes them
    host_memory(store, "n2")
    counters.inc("hellos", 3)
    slow.gate.clear()  # the store's queries now hang until released

    def refresh_started() -> bool:
        collect(exporter)  # a scrape finding the gauges older than the cache's age starts a refresh
        return slow.cursors == 2

    wait_for(refresh_started, timeout_s=10, what="a refresh to start")
    got = collect(exporter)  # served at once from the cache, while the refresh waits on the store
    assert nodes(got) == {"n1"}
    assert got["c4_collector_hellos"][0].value == 3, "the collector's own counters must never be cached"
    assert got["c4_exporter_store_metrics_age_seconds"][0].value > 0
    assert slow.cursors == 2, "one refresh at a time"
    slow.gate.set()
    wait_for(lambda: nodes(collect(exporter)) == {"n1", "n2"}, timeout_s=10, what="the refreshed gauges")


def test_without_a_cache_every_scrape_reads_the_store(parts):
    store, slow, _, collector = parts
    host_memory(store, "n1")
    exporter = C4Metrics(collector, window_s=300)
    assert nodes(collect(exporter)) == {"n1"}
    host_memory(store, "n2")
    got = collect(exporter)
    assert nodes(got) == {"n1", "n2"} and slow.cursors == 2
    assert got["c4_exporter_store_metrics_age_seconds"][0].value < 60


def test_close_waits_for_the_running_refresh_and_starts_no_other(parts):
    """The collector closes its store right after the exporter stops: a refresh still querying then
    aborted the whole process in DuckDB (CI: 'terminate called without an active exception')."""
    store, slow, _, collector = parts
    host_memory(store, "n1")
    exporter = C4Metrics(collector, window_s=300, store_cache_s=0.01)
    assert nodes(collect(exporter)) == {"n1"}
    slow.gate.clear()

    def refresh_started() -> bool:
        collect(exporter)
        return slow.cursors == 2

    wait_for(refresh_started, timeout_s=10, what="a refresh to start")
    closed = threading.Event()
    closer = threading.Thread(target=lambda: exporter.close(timeout_s=30) and closed.set())
    closer.start()
    assert not closed.wait(0.5), "close returned while the refresh still queried the store"
    slow.gate.set()
    closer.join(30)
    assert closed.is_set()
    # closed: scrapes serve what was computed and never open a cursor on the store again
    got = collect(exporter)
    assert nodes(got) <= {"n1"} and slow.cursors == 2
    assert not exporter._refreshing.is_set()
    fresh = C4Metrics(collector, window_s=300)
    fresh.close()
    assert not collect(fresh).get("c4_node_memory_total_bytes") and slow.cursors == 2
