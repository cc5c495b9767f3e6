"""Ingest processes advise their agents' flush interval themselves: each tells the store process how far
behind the clock that makes its agents' data (with every group and every second), and the store
process's diagnosis looks as far back as the longest of them, not always the longest advice."""

from __future__ import annotations

import asyncio
import time

from testkit.inprocess_collector import RunningCollector
from testkit.wait import wait_for

from c4.catalogue import load
from c4.collector import server
from c4.collector.ingest import Metrics
from c4.collector.server import StoreIngestService
from c4.telemetry.v1 import telemetry_pb2 as pb


def told(svc: StoreIngestService, process: str, lag_s: float) -> None:
    asyncio.run(svc.Commit(pb.CommitGroup(process=process, flush_lag_s=lag_s), None))


def test_the_store_process_keeps_the_longest_recent_lag_of_its_ingest_processes(monkeypatch):
    svc = StoreIngestService(load(), writer=None, metrics=Metrics())
    assert svc.ingest_lag_s(10.0) is None  # none told yet: unknown
    told(svc, "101", 0.0)
    told(svc, "102", 5.0)
    assert svc.ingest_lag_s(10.0) == 5.0
    told(svc, "102", 2.0)  # stepped down
    assert svc.ingest_lag_s(10.0) == 2.0
    for hostile in (float("nan"), float("inf"), -1.0):  # off a socket: not a lag, ignored
        told(svc, "103", hostile)
    assert svc.ingest_lag_s(10.0) == 2.0
    told(svc, "", 9.0)  # a group from no named process (an older one) sets nothing
    assert svc.ingest_lag_s(10.0) == 2.0
    time.sleep(0.3)
    told(svc, "101", 1.0)
    assert svc.ingest_lag_s(0.2) == 1.0  # 102 stopped telling (restarted, say): forgotten
    monkeypatch.setattr(server, "MAX_INGEST_PROCESSES_TOLD", 3)
    for pid in ("201", "202", "203"):
        told(svc, pid, 0.0)
    assert len(svc.flush_lags) <= 3  # pids of restarted processes do not pile up


def test_a_collector_with_an_ingest_process_hears_its_flush_lag(tmp_path):
    """A real ingest process tells its (idle) advisor's lag over the private socket: the store process's
    diagnosis then lags by that (0 s), where before it always took the longest advice (5 s)."""
    col = RunningCollector(tmp_path, ingest_processes=1)
    try:
        ingest = col.collector.store_ingest
        wait_for(lambda: ingest.ingest_lag_s(10.0) is not None, 30, "the ingest process's flush lag")
        assert col.collector._own_lag_s() == 0.0 and col.collector._advised_lag_s() == 0.0
        assert col.collector.service.flush_advisor.steps_s[-1] == 5.0  # what it took before
    finally:
        col.stop()
