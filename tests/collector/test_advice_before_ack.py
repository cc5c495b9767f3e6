"""The flush advice reaches an agent whose bundle waits for its commit: when the advice changes meanwhile the
collector sends an AckBundle with no acks and the new advice at once, then the bundle's acks as before (a
backlog delays acks by seconds, and the advice is what ends the backlog)."""

from __future__ import annotations

import queue
import threading
import time

import grpc
from testkit.inprocess_collector import RunningCollector
from testkit.wire import heartbeat, hello

from c4.collector.flush_advice import FlushAdvisor
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc


class Clock:
    """A hand-moved monotonic clock for the collector's advisor."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_changed_advice_is_sent_before_the_waiting_bundles_acks(tmp_path):
    col = RunningCollector(tmp_path)
    clock = Clock()
    service = col.collector.service
    service.flush_advisor = FlushAdvisor(max_s=5.0, clock=clock)
    store = col.collector.store
    release = threading.Event()
    real_commit = store.commit

    def held_commit(batches):
        release.wait(30)  # the writer is behind: this bundle's commit waits
        return real_commit(batches)

    replies: queue.Queue = queue.Queue()
    sent: queue.Queue = queue.Queue()
    try:
        with grpc.insecure_channel(col.address) as channel:
            stub = pb_grpc.TelemetryStub(channel)
            stub.Hello(hello("slow-1"), timeout=30)
            store.commit = held_commit
            sent.put(pb.BatchBundle(batches=[heartbeat("slow-1", 1)]))
            call = stub.PushBundle(iter(sent.get, None), timeout=60)
            reader = threading.Thread(target=lambda: [replies.put(r) for r in call], daemon=True)
            reader.start()
            time.sleep(0.5)  # the bundle is with the writer, waiting
            assert replies.empty()

            async def slow_acks_elsewhere() -> float:
                # other streams' bundles took 2 s each, over two windows: the advisor raises its advice
                for _ in range(3):
                    clock.t += 1.1
                    service._flush_advice(time.time_ns() // 1000 - 2_000_000)
                return service.flush_advisor.advice_s()

            assert col._call(slow_acks_elsewhere()) == 5.0
            early = replies.get(timeout=10)
            assert list(early.acks) == [] and early.flush_interval_s == 5.0  # before its commit
            release.set()
            acked = replies.get(timeout=30)
            assert [a.seq for a in acked.acks] == [1] and acked.acks[0].code == 0
            assert acked.flush_interval_s == 5.0
            sent.put(None)
            reader.join(30)
        assert col.rows("slow-1")[0] == 1
    finally:
        release.set()
        store.commit = real_commit
        col.stop()
