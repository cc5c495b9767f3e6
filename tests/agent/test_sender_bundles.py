"""The agent's Sender: a backlog goes out in bundles, and against a collector without PushBundle
(an older version) it falls back to one batch per message; nothing is lost or stored twice."""

from __future__ import annotations

import logging
import threading
from datetime import datetime

import grpc
import pyarrow as pa
import pytest
from testkit.inprocess_collector import RunningCollector
from testkit.wait import wait_for

from c4.agent.client import Sender
from c4.agent.spool import Spool
from c4.arrow_ipc import encode_ipc
from c4.catalogue import load
from c4.collector.server import TelemetryService
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

SPEC = load()["agent_heartbeat"]


def spool_backlog(path, node: str, batches: int, rows_per_batch: int = 5) -> Spool:
    spool = Spool(path, 64 << 20)
    for b in range(batches):
        rows = [
            {c: None for c in SPEC.column_names}
            | {"ts": datetime(2026, 1, 1), "node": node, "agent_id": node, "tick": b * rows_per_batch + i}
            for i in range(rows_per_batch)
        ]
        spool.append(
            SPEC.name, SPEC.version, encode_ipc(pa.Table.from_pylist(rows, schema=SPEC.arrow_schema))
        )
    return spool


def drain(address: str, spool: Spool, node: str) -> Sender:
    sender = Sender(
        address, node, spool, lambda: pb.HelloRequest(agent_id=node, hostname=node), max_in_flight=32
    )
    stop = threading.Event()
    t = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    t.start()
    try:
        wait_for(lambda: len(spool) == 0, timeout_s=60, what="spool drained")
    finally:
        stop.set()
        t.join(15)
    return sender


def test_backlog_goes_out_in_bundles(tmp_path):
    col = RunningCollector(tmp_path)
    try:
        sender = drain(col.address, spool_backlog(tmp_path / "spool", "bundled", 200), "bundled")
        assert sender.bundles and sender.stats.batches_acked == 200
        assert col.rows("bundled") == (1000, 1000)
        counters = col.counters()
        # at most max_in_flight batches per bundle: a 200-batch backlog takes a handful of messages
        assert 200 / 32 <= counters["bundles_received"] < 40, counters
    finally:
        col.stop()


def test_falls_back_to_push_against_a_collector_without_bundles(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(TelemetryService, "PushBundle", pb_grpc.TelemetryServicer.PushBundle)  # UNIMPLEMENTED
    col = RunningCollector(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="c4.agent.client"):
            sender = drain(col.address, spool_backlog(tmp_path / "spool", "old", 50), "old")
        assert not sender.bundles and sender.stats.batches_acked == 50
        assert col.rows("old") == (250, 250)
        assert col.counters().get("bundles_received", 0) == 0
        assert "has no PushBundle" in caplog.text
    finally:
        col.stop()


def test_unimplemented_really_is_what_an_older_collector_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(TelemetryService, "PushBundle", pb_grpc.TelemetryServicer.PushBundle)
    col = RunningCollector(tmp_path)
    try:
        with grpc.insecure_channel(col.address) as ch, pytest.raises(grpc.RpcError) as err:
            list(pb_grpc.TelemetryStub(ch).PushBundle(iter([pb.BatchBundle()]), timeout=10))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        col.stop()
