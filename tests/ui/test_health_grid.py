"""The overview's health grid shows what the raw rows and the faults say, computed here in Python.

A real store: three nodes' GPUs and NIC ports sampled for ten minutes, one GPU silent for the last six
(gone from the grid), a hardware fault open on a GPU, a slowness fault acknowledged on a link (both ends
marked), a resolved fault (not shown), and a fault whose latest row resolved it after an open one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa

from c4.catalogue import load
from c4.collector.store import PendingBatch, Store
from c4.ui.queries.overview import INVENTORY_WINDOW_S, health_grid
from c4.ui.sql import SEVERITY

END = datetime(2026, 12, 4, 12, 10, 0)
NODES = ("host0", "host1", "host2")


def _commit(store: Store, name: str, rows: list[dict]) -> None:
    spec = load()[name]
    store.commit([PendingBatch("", 0, spec, pa.Table.from_pylist(rows, schema=spec.arrow_schema))])


def _fault(fid: str, component: str, cls: str, state: str, at: datetime, summary: str) -> dict:
    return {
        "ts": at,
        "node": component.split("/")[0],
        "job": "",
        "fault_id": fid,
        "detector": "t",
        "fault_class": cls,
        "component_type": "link" if "<->" in component else "gpu" if "gpu" in component else "nic_port",
        "component": component,
        "first_seen": at,
        "last_seen": at,
        "confidence": 0.9,
        "action": "",
        "state": state,
        "summary": summary,
        "evidence_json": "{}",
        "evidence_sql": "",
    }


def test_the_grid_is_the_components_seen_lately_with_their_worst_active_fault(tmp_path):
    store = Store(tmp_path / "c4.duckdb", load())
    gpus, ports = [], []
    for s in range(600):
        ts = END - timedelta(seconds=600 - s)
        for node in NODES:
            for g in (0, 1):
                if (node, g) == ("host2", 1) and s >= 240:  # silent for the last 360 s: beyond the window
                    continue
                gpus.append({"ts": ts, "node": node, "job": "", "gpu_index": g, "util_gpu_pct": 90.0})
            for d in (0, 1):
                ports.append({"ts": ts, "node": node, "job": "", "device": f"mlx5_{d}", "port": 1})
    _commit(store, "gpu_samples", gpus)
    _commit(store, "ib_port_samples", ports)
    t = END - timedelta(seconds=100)
    _commit(
        store,
        "faults",
        [
            _fault("f1", "host1/gpu0", "hardware", "open", t, "Xid 79"),
            _fault("f2", "host2/mlx5_1p1<->host0/mlx5_0p1", "comm_slow", "acknowledged", t, "slow link"),
            _fault("f3", "host0/gpu1", "hardware", "resolved", t, "gone"),
            _fault(
                "f4", "host1/gpu0", "congestion", "open", t, "congested"
            ),  # a lesser fault on the same GPU
            _fault("f5", "host0/mlx5_1p1", "hardware", "open", t - timedelta(seconds=50), "flapping"),
            _fault("f5", "host0/mlx5_1p1", "hardware", "resolved", t, "flapping"),  # its latest row: resolved
        ],
    )
    # expected, from the raw rows in Python
    newest = max(r["ts"] for r in gpus)
    since = newest - timedelta(seconds=INVENTORY_WINDOW_S)
    seen = {(r["node"], f"gpu{r['gpu_index']}") for r in gpus if since <= r["ts"] <= newest}
    seen |= {(r["node"], f"{r['device']}p{r['port']}") for r in ports if since <= r["ts"] <= newest}
    seen |= {(n, "node") for n, _ in seen}
    worst = {
        ("host1", "gpu0"): (SEVERITY["hardware"], "hardware", "Xid 79", 2, False),
        ("host2", "mlx5_1p1"): (SEVERITY["comm_slow"], "comm_slow", "slow link", 1, True),
        ("host0", "mlx5_0p1"): (SEVERITY["comm_slow"], "comm_slow", "slow link", 1, True),
    }
    want = {cell: worst.get(cell, (0, "healthy", "", 0, False)) for cell in seen}
    cur = store.cursor()
    rows = cur.execute(health_grid()).to_arrow_table().to_pylist()
    got = {
        (r["node"], r["component"]): (
            r["severity"],
            r["status"],
            r["summary"],
            r["faults"],
            r["acknowledged"],
        )
        for r in rows
    }
    assert ("host2", "gpu1") not in got and len(rows) == len(got) == 3 * 5 - 1
    assert got == want
    # ordered node by node (host0, host1, host2), each node's cell first, GPUs before NIC ports
    assert [r["node"] for r in rows] == sorted(r["node"] for r in rows)
    assert [r["component"] for r in rows if r["node"] == "host0"] == [
        "node",
        "gpu0",
        "gpu1",
        "mlx5_0p1",
        "mlx5_1p1",
    ]
    cur.close()
    store.close()
