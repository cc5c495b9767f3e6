"""A row with ts = int64 max (DuckDB's 'infinity') in a store an older version wrote: nothing background dies.

The poisoned rows go straight into the store file, bypassing ingest (which now refuses them), as a
file written by an older collector holds them. Then a real collector runs on that file.
"""

from __future__ import annotations

import subprocess
import urllib.request
from datetime import UTC, datetime

import pyarrow as pa
from prometheus_client.parser import text_string_to_metric_families
from testkit.procs import C4, CollectorProc, free_port
from testkit.wait import wait_for

from c4.catalogue import load
from c4.collector.store import PendingBatch, Store
from c4.push import push_table
from c4.query import query_arrow

INT64_MAX = 2**63 - 1
#: 294247-01-10: the largest timestamp DuckDB stores as a date (one below its 'infinity')
ALMOST_MAX = 2**63 - 2


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def xid_row(node: str, gpu: int, ts) -> dict:
    return {
        "ts": ts,
        "node": node,
        "job": "",
        "kind": "xid",
        "source": "kmsg",
        "gpu_index": gpu,
        "pci_bus_id": f"0000:{0x18 + gpu:02x}:00.0",
        "xid": 79,
        "xid_name": "GPU has fallen off the bus",
        "category": "bus",
        "meaning": "the GPU is no longer reachable on PCIe",
        "action": "drain_node",
        "message": "NVRM: Xid (PCI:0000:1b:00): 79, GPU has fallen off the bus.",
    }


def poison(db) -> None:
    """Rows dated int64 max and int64 max - 1 microseconds, written as an old collector stored them."""
    cat = load()
    store = Store(db, cat)
    try:
        for table, rows in {
            "gpu_events": [xid_row("poison", 0, 0)],
            "gpu_samples": [{"ts": 0, "node": "poison", "job": "", "gpu_index": 0, "util_gpu_pct": 99.0}],
            "host_memory": [{"ts": 0, "node": "poison", "job": "", "mem_available_bytes": 1}],
        }.items():
            spec = cat[table]
            data = pa.Table.from_pylist(
                [{k: v for k, v in r.items() if k != "ts"} for r in rows],
                schema=spec.arrow_schema.remove(spec.arrow_schema.get_field_index("ts")),
            )
            stamps = [INT64_MAX if table != "gpu_samples" else ALMOST_MAX] * len(rows)
            data = data.add_column(0, "ts", pa.array(stamps, pa.timestamp("us")))
            store.commit([PendingBatch("", 0, spec, data.select(spec.column_names))])
        # the open fault an old diagnosis raised from such a row: stamped now, first/last seen at int64 max
        spec = cat["faults"]
        fault = {
            "ts": utcnow(),
            "node": "poison",
            "job": "",
            "fault_id": "xid79:poison/gpu0",
            "detector": "xid79",
            "fault_class": "hardware",
            "component_type": "gpu",
            "component": "poison/gpu0",
            "confidence": 0.95,
            "action": "drain_node",
            "state": "open",
            "summary": "Xid 79 on poison/gpu0",
            "evidence_json": "{}",
            "evidence_sql": "",
        }
        data = pa.Table.from_pylist([fault], schema=spec.arrow_schema)
        for col in ("first_seen", "last_seen"):
            i = data.schema.get_field_index(col)
            data = data.set_column(i, col, pa.array([INT64_MAX], pa.timestamp("us")))
        store.commit([PendingBatch("", 0, spec, data)])
    finally:
        store.close()


def count(col: CollectorProc, sql: str) -> int:
    return query_arrow(col.address, sql)[0].column(0)[0].as_py()


def scrape(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return {f.name: f for f in text_string_to_metric_families(resp.read().decode())}


def test_diagnosis_keeps_running_on_a_poisoned_store_and_c4_sql_prints_it(tmp_path):
    col = CollectorProc(tmp_path)
    poison(col.db)
    cfg = tmp_path / "c4.toml"
    cfg.write_text("[collector]\ndiagnose_interval_s = 0.5\nmetrics_interval_s = 0.5\n")
    metrics_port = free_port()
    col = CollectorProc(
        tmp_path, extra=["--config", str(cfg), "--metrics-listen", f"127.0.0.1:{metrics_port}"]
    ).start()
    try:
        push_table(
            col.address,
            "gpu_events",
            pa.Table.from_pylist([xid_row("victim", 3, utcnow())], schema=load()["gpu_events"].arrow_schema),
            agent_id="t",
        )
        wait_for(
            lambda: count(col, "SELECT count(*) FROM faults WHERE component = 'victim/gpu3'"),
            60,
            "the diagnosis to report the Xid 79 beside the poisoned rows",
        )
        # its health: runs counted, no failure, a recent success, in collector_metrics and on /metrics
        wait_for(
            lambda: (
                (
                    count(
                        col, "SELECT max(value) FROM collector_metrics WHERE metric = 'task_runs:diagnosis'"
                    )
                    or 0
                )
                >= 3
            ),
            30,
            "diagnosis runs in collector_metrics",
        )
        fams = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        runs = {s.labels["task"]: s.value for s in fams["c4_collector_task_runs"].samples}
        failures = {s.labels["task"]: s.value for s in fams["c4_collector_task_failures"].samples}
        assert runs["diagnosis"] >= 3 and failures["diagnosis"] == 0, (runs, failures)
        last = {
            s.labels["task"]: s.value
            for s in fams["c4_collector_task_last_success_timestamp_seconds"].samples
        }
        assert last["diagnosis"] > utcnow().replace(tzinfo=UTC).timestamp() - 600
        # the poisoned gauges are not exported as the node's latest values
        memory = fams.get("c4_node_memory_available_bytes")
        assert not memory or not [s for s in memory.samples if s.labels["node"] == "poison"]
        # `c4 sql` prints the rows (every format) instead of crashing
        for fmt in ("table", "csv", "json"):
            out = subprocess.run(
                [
                    *C4,
                    "sql",
                    "--collector",
                    col.address,
                    "--format",
                    fmt,
                    "SELECT ts, node FROM gpu_events WHERE node = 'poison' "
                    "UNION ALL SELECT ts, node FROM gpu_samples WHERE node = 'poison' ORDER BY node",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            # int64 max is DuckDB's 'infinity' and shown so; past year 9999 otherwise, the raw value
            assert "poison" in out.stdout and "infinity" in out.stdout and str(ALMOST_MAX) in out.stdout, (
                fmt,
                out.stdout,
            )
            assert "out of range" in out.stdout and str(INT64_MAX) not in out.stdout
        # and `c4 faults list` shows the old fault
        out = subprocess.run(
            [*C4, "faults", "--collector", col.address, "list"], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0 and "poison/gpu0" in out.stdout and "infinity" in out.stdout, out
    finally:
        assert col.stop() == 0
    assert "Traceback" not in col.log() and "PanicException" not in col.log()


def test_retention_removes_rows_dated_beyond_the_allowed_skew(tmp_path):
    col = CollectorProc(tmp_path)
    poison(col.db)
    cfg = tmp_path / "c4.toml"
    cfg.write_text("[collector]\nretention_interval_s = 0.5\ndiagnose_interval_s = 0.5\n")
    col = CollectorProc(tmp_path, extra=["--config", str(cfg)]).start()
    try:
        sql = (
            "SELECT (SELECT count(*) FROM gpu_events) + (SELECT count(*) FROM gpu_samples) "
            "+ (SELECT count(*) FROM host_memory)"
        )
        assert count(col, sql) == 3
        wait_for(lambda: count(col, sql) == 0, 30, "retention to remove the rows dated at int64 max")
        wait_for(
            lambda: (
                count(
                    col,
                    "SELECT max(value) FROM collector_metrics WHERE metric = 'retention_future_rows_deleted'",
                )
                == 3
            ),
            30,
            "the removed rows counted",
        )
    finally:
        assert col.stop() == 0
    assert "rows dated ahead of the collector's clock" in col.log()
