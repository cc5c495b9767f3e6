"""Heavy queries cannot starve the collector: small queries, fault updates and ingest go on beside
them, their memory has a budget, and the number of queries waiting is bounded."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import grpc
import pyarrow as pa
import pytest
from testkit.procs import CollectorProc
from testkit.wait import wait_for
from testkit.wire import heartbeat, hello, stub

from c4.catalogue import load
from c4.push import push_table
from c4.query import QueryError, query_arrow
from c4.security import ClientSecurity
from c4.telemetry.v1 import telemetry_pb2 as pb

#: Runs for days: a query that only ends when interrupted.
ENDLESS = "SELECT count(*) FROM range(1000000000000000) t(i) WHERE i % 7 = 3"
#: Needs about 2 GB of DuckDB memory (a 40 M element list sorted at random).
HUNGRY = "SELECT length(list(i ORDER BY random())) FROM range(40000000) t(i)"


def collector(tmp_path, **keys) -> CollectorProc:
    """A collector (no tokens) with ``[collector]`` keys; no background diagnosis or metrics rows."""
    keys = {"diagnose_interval_s": 0, "metrics_interval_s": 3600, **keys}
    config = tmp_path / "c4.toml"
    config.write_text("[collector]\n" + "".join(f"{k} = {v!r}\n" for k, v in keys.items()))
    return CollectorProc(tmp_path, extra=["--config", str(config)]).start()


def counters(address: str) -> dict[str, int]:
    """The collector's counters (Stats)."""
    return dict(stub(address, ClientSecurity()).Stats(pb.StatsRequest(), timeout=30).counters)


def in_flight(address: str) -> int:
    """Queries executing now."""
    c = counters(address)
    return c.get("queries_started", 0) - c.get("queries_done", 0)


class Background:
    """Queries streaming in threads; each ends with a status code."""

    def __init__(self, address: str, sql: str, n: int, timeout_s: float = 0) -> None:
        self.codes: list[grpc.StatusCode] = []
        self.calls = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._one, args=(address, sql, timeout_s)) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _one(self, address: str, sql: str, timeout_s: float) -> None:
        call = stub(address, ClientSecurity()).Query(pb.QueryRequest(sql=sql, timeout_s=timeout_s))
        with self._lock:
            self.calls.append(call)
        try:
            for _ in call:
                pass
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
        with self._lock:
            self.codes.append(code)

    def cancel(self) -> None:
        """Cancel every call (the reader goes away)."""
        with self._lock:
            for call in self.calls:
                call.cancel()

    def join(self) -> list[grpc.StatusCode]:
        """Wait for every query; their codes."""
        for t in self.threads:
            t.join(120)
        return self.codes


def test_small_queries_fault_updates_and_ingest_go_on_beside_eight_heavy_queries(tmp_path):
    col = collector(tmp_path, query_timeout_s=600.0)
    spec = load()["faults"]
    fault = {c: None for c in spec.column_names} | {
        "ts": datetime.now(UTC).replace(tzinfo=None),
        "node": "node-a",
        "job": "",
        "fault_id": "xid:node-a/gpu0",
        "state": "open",
        "component": "node-a/gpu0",
    }
    push_table(col.address, "faults", pa.Table.from_pylist([fault], schema=spec.arrow_schema), "seed")
    heavy = Background(col.address, ENDLESS, 8)
    try:
        wait_for(lambda: in_flight(col.address) >= 8, timeout_s=60, what="eight heavy queries executing")
        # while all eight execute: a small query, an operator's acknowledgement, an agent's batch
        assert query_arrow(col.address, "SELECT 42 AS x")[0].column(0).to_pylist() == [42]
        reply = stub(col.address, ClientSecurity()).UpdateFault(
            pb.FaultUpdate(fault_id="xid:node-a/gpu0", state="acknowledged", by="oncall"), timeout=120
        )
        assert (reply.previous_state, reply.state) == ("open", "acknowledged")
        agent = stub(col.address, ClientSecurity())
        agent.Hello(hello("node-a"), timeout=60)
        acks = list(agent.Push(iter([heartbeat("node-a", 1)]), timeout=60))
        assert [(a.code, a.rows) for a in acks] == [(0, 1)]
        sql = "SELECT state FROM faults WHERE fault_id = 'xid:node-a/gpu0' ORDER BY ts DESC LIMIT 1"
        assert query_arrow(col.address, sql)[0].column(0).to_pylist() == ["acknowledged"]
        assert query_arrow(col.address, "SELECT count(*) FROM agent_heartbeat")[0].column(0)[0].as_py() == 1
        # ... and none of that waited for a heavy query to end
        assert in_flight(col.address) >= 8
    finally:
        heavy.cancel()
        codes = heavy.join()
    assert codes == [grpc.StatusCode.CANCELLED] * 8
    wait_for(lambda: in_flight(col.address) == 0, what="the cancelled queries interrupted in the collector")
    assert col.stop() == 0


def _peak_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_queries_over_the_memory_budget_are_cancelled_oldest_first(tmp_path):
    budget = 256 << 20
    col = collector(tmp_path, query_memory_bytes=budget, query_timeout_s=600.0)
    try:
        hungry = Background(col.address, HUNGRY, 3)
        codes = hungry.join()
        assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
        # three queries that want ~2 GB each did not take the collector anywhere near 6 GB
        assert _peak_rss_bytes(col.p.pid) < 1536 << 20
        assert counters(col.address)["queries_cancelled_memory"] == 3
        assert (
            query_arrow(col.address, "SELECT sum(i) FROM range(1000) t(i)")[0].column(0)[0].as_py() == 499500
        )
        with pytest.raises(QueryError) as err:
            query_arrow(col.address, HUNGRY)
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "query_memory_bytes" in str(err.value)
    finally:
        assert col.stop() == 0


def test_queries_beyond_the_queue_limit_are_refused_until_there_is_room(tmp_path):
    col = collector(tmp_path, query_max_running=1, query_max_queued=1, query_timeout_s=600.0)
    try:
        held = Background(col.address, ENDLESS, 2)  # one executes, one waits
        wait_for(lambda: counters(col.address).get("queries", 0) >= 2, what="two queries admitted")
        wait_for(lambda: in_flight(col.address) == 1, what="one query executing")
        with pytest.raises(QueryError) as err:
            query_arrow(col.address, "SELECT 1")
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "query_max_queued" in str(err.value)
        held.cancel()
        assert held.join() == [grpc.StatusCode.CANCELLED] * 2
        wait_for(lambda: in_flight(col.address) == 0, what="the held queries gone")
        assert query_arrow(col.address, "SELECT 1")[0].column(0).to_pylist() == [1]
        assert counters(col.address)["queries_busy"] == 1
    finally:
        assert col.stop() == 0
