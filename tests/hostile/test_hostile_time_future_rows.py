"""One node's clock a day ahead: a real collector's diagnosis and /metrics keep to the collector's clock.

The future rows are written straight into the store file, as an older collector (which admitted
any timestamp) left them: the live windows must ignore them whatever ingest does today.
"""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from prometheus_client.parser import text_string_to_metric_families
from testkit.procs import CollectorProc, free_port
from testkit.wait import wait_for

from c4.catalogue import load
from c4.collector.store import PendingBatch, Store
from c4.push import push_table
from c4.query import query_arrow

DIAGNOSIS = "[collector]\ndiagnose_interval_s = 0.5\ndiagnose_window_s = 600\nmetrics_interval_s = 0.5\n"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def xid_row(node: str, gpu: int, ts: datetime, xid: int = 79) -> dict:
    """A kernel-log Xid as the xid_kmsg sampler stores it."""
    return {
        "ts": ts,
        "node": node,
        "job": "",
        "kind": "xid",
        "source": "kmsg",
        "gpu_index": gpu,
        "gpu_uuid": None,
        "pci_bus_id": f"0000:{0x18 + gpu:02x}:00.0",
        "xid": xid,
        "xid_name": "GPU has fallen off the bus",
        "category": "bus",
        "meaning": "the GPU is no longer reachable on PCIe",
        "action": "drain_node",
        "message": f"NVRM: Xid (PCI:0000:{0x18 + gpu:02x}:00): {xid}, GPU has fallen off the bus.",
    }


def write_rows(db, table: str, rows: list[dict]) -> None:
    """Commit rows straight into a stopped collector's file (no ingest checks, as an old version would)."""
    spec = load()[table]
    store = Store(db, load())
    try:
        store.commit([PendingBatch("", 0, spec, pa.Table.from_pylist(rows, schema=spec.arrow_schema))])
    finally:
        store.close()


def push(col: CollectorProc, table: str, rows: list[dict]) -> None:
    spec = load()[table]
    push_table(
        col.address, table, pa.Table.from_pylist(rows, schema=spec.arrow_schema), agent_id=f"t-{table}"
    )


def fault_rows(col: CollectorProc, component: str) -> list[dict]:
    t, _ = query_arrow(
        col.address, f"SELECT state, ts FROM faults WHERE component = '{component}' ORDER BY ts"
    )
    return t.to_pylist()


def test_future_gpu_event_on_another_node_neither_resolves_nor_hides_xid79(tmp_path):
    cfg = tmp_path / "c4.toml"
    cfg.write_text(DIAGNOSIS)
    col = CollectorProc(tmp_path, extra=["--config", str(cfg)]).start()
    try:
        push(col, "gpu_events", [xid_row("victim", 3, utcnow())])
        wait_for(lambda: fault_rows(col, "victim/gpu3"), 60, "the Xid 79 fault on victim/gpu3")
    finally:
        assert col.stop() == 0
    # a node whose clock runs one day ahead reported an event; an older collector stored it as is
    write_rows(col.db, "gpu_events", [xid_row("skewed", 0, utcnow() + timedelta(days=1), xid=13)])
    col = CollectorProc(tmp_path, port=col.port, extra=["--config", str(cfg)]).start()
    try:
        before = len(fault_rows(col, "victim/gpu3"))

        def settled():
            rows = fault_rows(col, "victim/gpu3")
            resolved = any(r["state"] == "resolved" for r in rows)
            return resolved or len(rows) >= before + 5  # five more passes re-detected it

        wait_for(settled, 60, "five diagnosis passes after the restart")
        states = [r["state"] for r in fault_rows(col, "victim/gpu3")]
        assert "resolved" not in states, "the open Xid 79 fault was auto-resolved by a future row elsewhere"
        # a new Xid 79 on a third node is still detected
        push(col, "gpu_events", [xid_row("victim2", 1, utcnow())])
        wait_for(lambda: fault_rows(col, "victim2/gpu1"), 60, "the new Xid 79 fault on victim2/gpu1")
        assert fault_rows(col, "victim2/gpu1")[0]["state"] == "open"
    finally:
        col.stop()


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def memory_row(node: str, ts: datetime, available: int) -> dict:
    return {
        "ts": ts,
        "node": node,
        "job": "",
        "mem_total_bytes": 1 << 40,
        "mem_available_bytes": available,
        "swap_used_bytes": 0,
        "load1": 1.0,
        "procs_running": 1,
    }


def test_future_row_does_not_pin_a_nodes_gauges(tmp_path):
    col = CollectorProc(tmp_path)
    write_rows(col.db, "host_memory", [memory_row("n1", utcnow() + timedelta(days=1), 1)])
    metrics_port = free_port()
    cfg = tmp_path / "c4.toml"
    cfg.write_text("[collector]\ndiagnose_interval_s = 0\n")
    col = CollectorProc(
        tmp_path, extra=["--config", str(cfg), "--metrics-listen", f"127.0.0.1:{metrics_port}"]
    ).start()
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        push(col, "host_memory", [memory_row("n1", utcnow(), 123456789), memory_row("n2", utcnow(), 42)])

        def gauges():
            fam = scrape(url).get("c4_node_memory_available_bytes")
            got = {s.labels["node"]: s.value for s in fam.samples} if fam else {}
            return got if {"n1", "n2"} <= set(got) else None

        got = wait_for(gauges, 30, "both nodes' memory gauges")
        assert got == {"n1": 123456789, "n2": 42}, got
        # a later row (still in the present) moves the gauge: it follows the newest row not in the future
        push(col, "host_memory", [memory_row("n1", utcnow() + timedelta(seconds=1), 987654321)])
        wait_for(lambda: gauges() and gauges()["n1"] == 987654321, 30, "the gauge to follow the newest row")
    finally:
        col.stop()


def test_dashboard_windows_end_at_the_newest_row_not_in_the_future(tmp_path):
    from c4.ui.queries import overview

    now = utcnow()
    rows = [{"ts": now, "node": f"host{n}", "job": "", "gpu_index": g} for n in (1, 2) for g in range(8)]
    rows.append({"ts": now + timedelta(days=1), "node": "ahead", "job": "", "gpu_index": 0})
    col = CollectorProc(tmp_path)
    write_rows(col.db, "gpu_samples", rows)
    col.start()
    try:
        t, _ = query_arrow(col.address, overview.inventory_counts())
        got = t.to_pylist()[0]
        # the window ends at the present: 16 GPUs on two nodes, not the one row a day ahead
        assert (got["nodes"], got["gpus"]) == (2, 16), got
        assert abs((got["newest_gpu_sample"] - now).total_seconds()) < 1
    finally:
        col.stop()


def test_offline_diagnosis_ends_at_the_stopped_collectors_clock(tmp_path):
    import json
    import subprocess
    import sys

    db = tmp_path / "c4.duckdb"
    stopped = utcnow() - timedelta(hours=3)  # the collector stopped three hours ago
    write_rows(
        db,
        "collector_metrics",
        [{"ts": stopped, "node": "collector", "job": "", "metric": "hellos", "value": 1}],
    )
    write_rows(
        db,
        "gpu_events",
        [
            xid_row("victim", 3, stopped - timedelta(seconds=5)),
            xid_row("skewed", 0, stopped + timedelta(days=1), 13),
        ],
    )
    out = subprocess.run(
        [sys.executable, "-m", "c4.cli", "diagnose", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert [f["component"] for f in json.loads(out.stdout)] == ["victim/gpu3"]
