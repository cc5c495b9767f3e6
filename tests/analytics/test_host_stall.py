"""A cpu_stall finding joined with its host's CPU (busy, iowait, idle, no data) and its GPU's idleness."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from c4.analytics.diagnose import joined_with_hardware
from c4.analytics.findings import Finding
from c4.analytics.host_stall import host_cpu_shares, joined_with_host
from c4.analytics.window import window_from_cursor
from c4.catalogue import load
from c4.collector.store import PendingBatch, Store

T0 = datetime(2027, 1, 15, 12, 0, 0)


def stall(node: str = "host1", gpus=("host1/gpu2",), steps: int = 10) -> Finding:
    """A step-trace cpu_stall on ``node`` over ``steps`` one-second steps from T0 + 10 s."""
    return Finding(
        "step_attribution",
        "cpu_stall",
        "cpu",
        f"{node}/cpu",
        node,
        T0 + timedelta(seconds=10),
        T0 + timedelta(seconds=10 + steps - 1),
        0.9,
        "investigate_host",
        "host-side delay on ranks [10]",
        evidence={"ranks": [10], "gpus": list(gpus), "step_s": 1.0},
        job="j",
    )


def cpu_rows(node: str, shares_before: dict, shares_during: dict, cpus: int = 64) -> pl.DataFrame:
    """host_cpu 'all' counters of ``node`` sampled each second for 30 s: ``shares_during`` from 10 s to 20 s."""
    acc = dict.fromkeys(("user_s", "system_s", "idle_s", "iowait_s", "steal_s"), 1000.0)
    rows = []
    for k in range(30):
        shares = shares_during if 10 <= k < 20 else shares_before
        for c, v in shares.items():
            acc[c] += v * cpus  # one second of every CPU
        rows.append({"ts": T0 + timedelta(seconds=k + 1), "node": node, "cpu": "all", **acc})
    return pl.DataFrame(rows)


def gpu_rows(node: str, gpu: int, util_during: float) -> pl.DataFrame:
    """gpu_samples of one GPU each second (NVML: the second up to ts): ``util_during`` from 10 s to 20 s, else 97%."""
    return pl.DataFrame(
        [
            {
                "ts": T0 + timedelta(seconds=k),
                "node": node,
                "gpu_index": gpu,
                "util_gpu_pct": util_during if 10 < k <= 20 else 97.0,
            }
            for k in range(30)
        ]
    )


CALM = {"user_s": 0.30, "system_s": 0.05, "idle_s": 0.64, "iowait_s": 0.01}
BUSY = {"user_s": 0.88, "system_s": 0.09, "idle_s": 0.03}
IOWAIT = {"user_s": 0.05, "system_s": 0.05, "idle_s": 0.30, "iowait_s": 0.60}


def test_a_busy_host_and_an_idle_gpu_are_the_stalls_evidence():
    (f,) = joined_with_host([stall()], cpu_rows("host1", CALM, BUSY), gpu_rows("host1", 2, 12.0))
    assert f.evidence["host_verdict"] == "busy"
    assert (
        f.evidence["host_cpu"]["busy_frac"] > 0.9
    )  # the calm seconds at the window's edges dilute it little
    assert f.evidence["gpu"]["gpu_idle_frac"] == 0.88
    assert "host host1 busy" in f.summary and "GPU idle 88% of the stall" in f.summary
    assert "data loader" in f.summary
    assert (f.fault_class, f.action) == ("cpu_stall", "investigate_host")  # still software, no drain


def test_iowait_puts_the_stall_on_storage():
    (f,) = joined_with_host([stall()], cpu_rows("host1", CALM, IOWAIT), gpu_rows("host1", 2, 5.0))
    assert f.evidence["host_verdict"] == "iowait"
    assert f.evidence["host_cpu"]["iowait_frac"] > 0.5
    assert "I/O wait" in f.summary and "storage" in f.summary


def test_a_calm_host_leaves_the_stall_unexplained_by_its_cpu():
    (f,) = joined_with_host([stall()], cpu_rows("host1", CALM, CALM), gpu_rows("host1", 2, 40.0))
    assert f.evidence["host_verdict"] == "idle"
    assert "idle too" in f.summary and "profile the rank's process" in f.summary


def test_no_host_data_is_said_not_an_error():
    other_host = cpu_rows("host7", CALM, BUSY)
    (f,) = joined_with_host([stall()], other_host, pl.DataFrame())
    assert (
        f.evidence["host_verdict"] == "no_data"
        and f.evidence["host_cpu"] is None
        and f.evidence["gpu"] is None
    )
    assert "no host CPU samples from host1" in f.summary
    (g,) = joined_with_host([stall()], pl.DataFrame(), pl.DataFrame())
    assert g.evidence["host_verdict"] == "no_data"
    unplaced = stall(node="", gpus=())  # a trace without hosts names "<job>/rank<r>"
    unplaced.component = "j/rank10"
    (h,) = joined_with_host([unplaced], cpu_rows("host1", CALM, BUSY), gpu_rows("host1", 2, 5.0))
    assert h.evidence["host_verdict"] == "no_data" and "no host CPU samples from its host" in h.summary


def test_another_hosts_busy_cpu_is_not_this_stalls_evidence():
    both = pl.concat([cpu_rows("host1", CALM, CALM), cpu_rows("host2", CALM, BUSY)])
    (f,) = joined_with_host([stall("host1")], both, pl.DataFrame())
    assert f.evidence["host_verdict"] == "idle"


def test_a_counter_reset_is_counted_not_taken_for_a_rate():
    rows = cpu_rows("host1", CALM, BUSY)
    rebooted = rows.with_columns(
        pl.when(pl.col("ts") >= T0 + timedelta(seconds=15))
        .then(pl.col(c) - 5000.0)
        .otherwise(pl.col(c))
        .alias(c)
        for c in ("user_s", "system_s", "idle_s", "iowait_s")
    )
    got = host_cpu_shares(rebooted, "host1", T0 + timedelta(seconds=10), T0 + timedelta(seconds=19))
    assert got["intervals_reset"] == 1 and got["busy_frac"] > 0.9


def test_per_cpu_rows_alone_are_summed_into_the_host():
    per_cpu = pl.concat(
        [cpu_rows("host1", CALM, BUSY, cpus=1).with_columns(pl.lit(str(i)).alias("cpu")) for i in range(4)]
    )
    got = host_cpu_shares(per_cpu, "host1", T0 + timedelta(seconds=10), T0 + timedelta(seconds=19))
    assert got["busy_frac"] > 0.9


def test_slow_workers_and_hardware_findings_get_no_host_evidence():
    slow = Finding(
        "step_attribution", "slow_worker", "gpu", "host1/gpu2", "host1", T0, T0, 0.9, "investigate", "slow"
    )
    found = joined_with_host(
        joined_with_hardware([slow]), cpu_rows("host1", BUSY, BUSY), gpu_rows("host1", 2, 10.0)
    )
    assert "host_verdict" not in found[0].evidence and "busy" not in found[0].summary


def test_the_diagnosis_window_loads_the_hosts_whole_cpu_not_every_cpu(tmp_path):
    cat = load()
    store = Store(tmp_path / "c4.duckdb", cat)
    rows = cpu_rows("host1", CALM, BUSY)
    per_cpu = rows.with_columns(pl.lit("3").alias("cpu"))
    both = pl.concat([rows, per_cpu]).with_columns(pl.lit("").alias("job"))
    store.commit(
        [PendingBatch("agent-h1", 1, cat["host_cpu"], both.select(cat["host_cpu"].column_names).to_arrow())]
    )
    cur = store.cursor()
    try:
        window = window_from_cursor(cur, 3600, T0 + timedelta(seconds=30))
    finally:
        cur.close()
        store.close()
    assert window["host_cpu"].height == rows.height and set(window["host_cpu"]["cpu"]) == {"all"}
