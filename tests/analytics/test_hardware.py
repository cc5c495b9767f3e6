"""Hardware detectors localize each injected fault to its component, and stay quiet on healthy and negative runs."""

from __future__ import annotations

import pytest
from testkit.twin import frames, run_twin

from c4.analytics.hardware import hardware_findings
from c4.catalogue import load
from c4.sim.twin import Fault

TABLES = ("gpu_events", "ib_port_samples", "gpu_samples")


def found(tmp_path, faults, steps=20):
    _, rows = run_twin(tmp_path, faults, steps=steps)
    return {
        (f.detector, f.component, f.fault_class, f.action) for f in hardware_findings(frames(rows, TABLES))
    }


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (
            Fault("nic_degraded", at_s=5, node="host1", nic=2),
            {
                ("nic_rate", "host1/mlx5_2p1", "hardware", "replace_cable"),
                ("nic_retrans", "host1/mlx5_2p1", "hardware", "replace_cable"),
            },
        ),
        (
            Fault("link_flap", at_s=3, duration_s=20, node="host0", nic=1),
            {("nic_flap", "host0/mlx5_1p1", "hardware", "replace_cable")},
        ),
        (
            Fault("link_down", at_s=3, node="host2", nic=6),
            {("nic_down", "host2/mlx5_6p1", "hardware", "replace_cable")},
        ),
        (
            Fault("xid", at_s=3, node="host2", gpu=1, xid=48),
            {("xid48", "host2/gpu1", "hardware", "drain_node")},
        ),
        (
            Fault("xid", at_s=3, node="host3", gpu=5, xid=79),
            {("gpu_lost", "host3/gpu5", "hardware", "drain_node")},
        ),
        (
            Fault("thermal_throttle", at_s=3, node="host0", gpu=3),
            {("gpu_throttle", "host0/gpu3", "non_comm_slow", "drain_node")},
        ),
        (
            Fault("pcie_downtrain", at_s=3, node="host1", gpu=2),
            {("pcie_downtrain", "host1/gpu2", "hardware", "reset_gpu")},
        ),
        (
            Fault("row_remap_failure", at_s=3, node="host2", gpu=6),
            {("row_remap_failure", "host2/gpu6", "hardware", "replace_gpu")},
        ),
    ],
    ids=lambda x: x.kind if isinstance(x, Fault) else "",
)
def test_each_fault_is_localized(tmp_path, fault, expected):
    got = found(tmp_path, [fault])
    assert expected <= got, got
    hardware = {g for g in got if g[2] in ("hardware", "non_comm_slow")}
    components = {g[1].split("/")[0] for g in hardware}
    assert components == {fault.node}, f"false alarm elsewhere: {got}"


@pytest.mark.parametrize("kind", [None, "uniform_slowdown", "transient_slowdown", "job_restart"])
def test_healthy_and_negative_runs_raise_nothing(tmp_path, kind):
    faults = [Fault(kind, at_s=4, duration_s=4, node="host1", factor=0.3)] if kind else []
    assert found(tmp_path, faults) == set()


def test_congestion_is_not_hardware(tmp_path):
    got = found(tmp_path, [Fault("ecmp_congestion", at_s=3, duration_s=30)])
    assert got and all(g[2] == "congestion" for g in got)


def test_diagnose_db_on_a_store(tmp_path):
    import json
    import subprocess
    import sys

    import pyarrow as pa

    from c4.collector.store import PendingBatch, Store

    _, rows = run_twin(
        tmp_path / "twin",
        [
            Fault("nic_degraded", at_s=5, node="host1", nic=2),
            Fault("xid", at_s=5, node="host3", gpu=4, xid=95),
        ],
        steps=15,
    )
    store = Store(tmp_path / "c4.duckdb", load())
    for t in (*TABLES, "nccl_collectives", "nccl_connections"):
        spec = load()[t]
        data = [{**{k: v for k, v in r.items() if k in spec.column_names}, "job": ""} for r in rows[t]]
        store.commit([PendingBatch("", 0, spec, pa.Table.from_pylist(data, schema=spec.arrow_schema))])
    store.close()
    out = subprocess.run(
        [sys.executable, "-m", "c4.cli", "diagnose", "--db", str(tmp_path / "c4.duckdb"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    got = {(f["component"], f["action"]) for f in json.loads(out.stdout)}
    assert {("host1/mlx5_2p1", "replace_cable"), ("host3/gpu4", "reset_gpu")} <= got
    detectors = {f["fault_id"].split(":")[0] for f in json.loads(out.stdout)}
    assert {"nic_rate", "slow_connection", "xid95"} <= detectors
    bad = subprocess.run(
        [sys.executable, "-m", "c4.cli", "diagnose", "--db", str(tmp_path / "nope.duckdb")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    folder = subprocess.run(
        [sys.executable, "-m", "c4.cli", "diagnose", "--db", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert folder.returncode == 2 and "is a directory, not a store file" in folder.stderr, folder.stderr


def _counter_frame(table, keys, counter, bumps, n=10):
    """`n` samples per component; `bumps` maps a component index to its total increase over the window."""
    from datetime import datetime, timedelta

    import polars as pl

    rows = []
    for c in range(16):
        for t in range(n):
            row = {
                "ts": datetime(2027, 1, 1) + timedelta(seconds=t),
                "node": f"host{c // 8}",
                counter: 5 + (bumps.get(c, 0) * t) // (n - 1),
            }
            row.update({k: v(c) for k, v in keys.items()})
            rows.append(row)
    return {table: pl.DataFrame(rows)}


@pytest.mark.parametrize(
    ("table", "keys", "counter", "bump", "expected"),
    [
        (
            "nvlink_samples",
            {"gpu_index": lambda c: c % 8, "link": lambda c: 0},
            "replay_errors",
            400,
            ("nvlink_errors", "host0/gpu3"),
        ),
        (
            "gpu_samples",
            {"gpu_index": lambda c: c % 8},
            "pcie_replay_count",
            5000,
            ("pcie_replay_burst", "host0/gpu3"),
        ),
        (
            "gpu_samples",
            {"gpu_index": lambda c: c % 8},
            "ecc_dbe_volatile",
            1,
            ("ecc_uncorrectable", "host0/gpu3"),
        ),
        (
            "ib_port_samples",
            {"device": lambda c: f"mlx5_{c % 8}", "port": lambda c: 1},
            "symbol_errors",
            900,
            ("nic_symbol_errors", "host0/mlx5_3p1"),
        ),
    ],
    ids=["nvlink", "pcie_replay", "ecc_dbe", "symbol_errors"],
)
def test_error_counter_bursts_above_peers(table, keys, counter, bump, expected):
    from c4.analytics.hardware import counter_burst_findings

    assert counter_burst_findings(_counter_frame(table, keys, counter, {})) == []  # flat counters: nothing
    # every component ticks a little: the baseline, not a fault (any uncorrectable ECC error is one)
    noisy_peers = {} if counter == "ecc_dbe_volatile" else {c: 3 for c in range(16)}
    assert counter_burst_findings(_counter_frame(table, keys, counter, noisy_peers)) == []
    got = counter_burst_findings(_counter_frame(table, keys, counter, {**noisy_peers, 3: bump}))
    assert [(f.detector, f.component) for f in got] == [expected]
    assert got[0].evidence["increase"] >= bump and counter in got[0].evidence_sql


def test_kernel_log_xid_is_mapped_to_the_gpu_by_bus_id():
    from datetime import datetime

    import polars as pl

    from c4.analytics.hardware import xid_findings

    ev = pl.DataFrame(
        [
            {
                "ts": datetime(2027, 1, 1),
                "node": "h1",
                "kind": "xid",
                "source": "kmsg",
                "gpu_index": None,
                "pci_bus_id": "0000:1b:00",
                "xid": 79,
                "xid_name": "GPU fell off the bus",
                "category": "bus",
                "meaning": "m",
                "action": "drain_node",
            }
        ],
        schema_overrides={"gpu_index": pl.Int64},
    )
    gpus = pl.DataFrame(
        {"node": ["h1", "h1"], "pci_bus_id": ["00000000:1A:00.0", "00000000:1B:00.0"], "gpu_index": [2, 3]}
    )
    assert [f.component for f in xid_findings(ev, gpus)] == ["h1/gpu3"]
    assert [f.component for f in xid_findings(ev)] == ["h1/pci0000:1b:00"]
