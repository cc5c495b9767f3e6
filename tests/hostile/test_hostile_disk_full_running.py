"""The disk holding the store fills while a real agent streams: the collector keeps serving, says why it
cannot commit (retryable UNAVAILABLE naming the cause), loses nothing it accepted, and recovers when
space returns; its periodic tasks' failures show on /metrics and their recovery too."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime

import grpc
import pyarrow as pa
from prometheus_client.parser import text_string_to_metric_families
from testkit.procs import AgentProc, CollectorProc, free_port
from testkit.small_disk import fill, small_tmpfs
from testkit.wait import wait_for

from c4.arrow_ipc import split_ipc
from c4.catalogue import load
from c4.query import query_arrow
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

FAST_AGENT = {"C4_AGENT_INTERVAL_S": "0.2", "C4_AGENT_FLUSH_INTERVAL_S": "0.2", "C4_AGENT_BACKOFF_MAX_S": "1"}


def scalar(address: str, sql: str):
    return query_arrow(address, sql)[0].column(0)[0].as_py()


def ticks(address: str, node: str) -> list[tuple[int, int, int]]:
    """(boot_ns, tick, copies) of every stored heartbeat of a node."""
    t, _ = query_arrow(
        address,
        f"SELECT boot_ns, tick, count(*) FROM agent_heartbeat WHERE node = '{node}' GROUP BY ALL ORDER BY ALL",
    )
    return [tuple(r.values()) for r in t.to_pylist()]


def assert_exactly_once(rows: list[tuple[int, int, int]]) -> int:
    """One boot, ticks 1..N each stored once; returns N."""
    assert rows and {r[0] for r in rows} == {rows[0][0]}, rows[:3]
    assert [r[2] for r in rows if r[2] != 1] == [], "a tick stored twice"
    assert [r[1] for r in rows] == list(range(1, len(rows) + 1)), "ticks have holes"
    return len(rows)


#: Rows in the probe batch: far more than the slack in the last page of the write-ahead log.
PROBE_ROWS = 20_000


def push_one(address: str, seq: int) -> pb.Ack:
    """One heartbeat batch of PROBE_ROWS rows from agent 'probe' on a Push stream; the collector's Ack."""
    spec = load()["agent_heartbeat"]
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {
            "ts": now,
            "node": "probe",
            "job": "",
            "agent_id": "probe",
            "boot_ns": seq,
            "tick": i,
            "uptime_s": 1.0,
        }
        for i in range(1, PROBE_ROWS + 1)
    ]
    [ipc] = split_ipc(pa.Table.from_pylist(rows, schema=spec.arrow_schema), 16 << 20)
    batch = pb.Batch(agent_id="probe", seq=seq, table=spec.name, schema_version=spec.version, arrow_ipc=ipc)
    with grpc.insecure_channel(address) as channel:
        [ack] = list(pb_grpc.TelemetryStub(channel).Push(iter([batch]), timeout=60))
    return ack


def task_health(url: str) -> dict[str, dict[str, float]]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        fams = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
    return {
        name: {s.labels["task"]: s.value for s in fams[name].samples}
        for name in ("c4_collector_task_failures", "c4_collector_task_consecutive_failures")
    }


def test_full_disk_while_running_loses_nothing_and_recovers(tmp_path):
    with small_tmpfs(tmp_path / "disk", "24m") as disk:
        db = disk / "c4.duckdb"
        cfg = tmp_path / "c4.toml"
        cfg.write_text("[collector]\nmetrics_interval_s = 0.3\ndiagnose_interval_s = 0\n")
        port = free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        extra = ["--config", str(cfg), "--db", str(db), "--metrics-listen", f"127.0.0.1:{port}"]
        col = CollectorProc(tmp_path, extra=extra).start()
        agent = AgentProc(
            tmp_path, col.address, "node-a", ["--samplers", "heartbeat"], env=FAST_AGENT
        ).start()
        try:
            wait_for(lambda: len(ticks(col.address, "node-a")) >= 10, 60, "ten heartbeats stored")
            filler = fill(disk)
            ack = push_one(col.address, 1)
            assert ack.code == grpc.StatusCode.UNAVAILABLE.value[0], ack
            assert "No space left on device" in ack.message and "cannot rollback" not in ack.message, (
                ack.message
            )
            # the failing metrics snapshot is counted and shown; reads still work meanwhile
            wait_for(
                lambda: task_health(url)["c4_collector_task_consecutive_failures"]["metrics_snapshot"] >= 1,
                30,
                "the metrics snapshot failing on the full disk",
            )
            stalled = len(ticks(col.address, "node-a"))
            filler.unlink()  # space returns
            assert push_one(col.address, 1).rows == PROBE_ROWS  # the refused batch is accepted when re-sent
            wait_for(lambda: len(ticks(col.address, "node-a")) >= stalled + 10, 60, "heartbeats stored again")
            wait_for(
                lambda: task_health(url)["c4_collector_task_consecutive_failures"]["metrics_snapshot"] == 0,
                30,
                "the metrics snapshot recovering",
            )
            assert task_health(url)["c4_collector_task_failures"]["metrics_snapshot"] >= 1
        finally:
            assert agent.stop() == 0
            assert col.stop() == 0
        assert not list(agent.spool.glob("*.seg")), "the agent exited with unacknowledged batches"
        log = col.log()
        assert "No space left on device" in log and "cannot rollback" not in log
        # every tick the agent sampled is stored exactly once, and still is after a restart
        col = CollectorProc(tmp_path, port=col.port, extra=extra).start()
        try:
            n = assert_exactly_once(ticks(col.address, "node-a"))
            assert n >= stalled + 10
            assert (
                scalar(col.address, "SELECT count(*) FROM agent_heartbeat WHERE node = 'probe'") == PROBE_ROWS
            )
        finally:
            assert col.stop() == 0
