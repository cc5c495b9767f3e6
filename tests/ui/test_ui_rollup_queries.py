"""The pages' time series read raw samples, 1-minute or 1-hour rollups by window, and show the same numbers.

A real DuckDB store (the collector's Store) with three whole hours of 1 Hz GPU and NIC port samples,
rolled up by the collector's own code; each page query runs at every resolution on the same data.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
from testkit.payloads import catalogue_table

from c4.catalogue import load
from c4.collector.rollup import roll_all
from c4.collector.store import PendingBatch, Store
from c4.ui.queries import bandwidth, collectives, overview
from c4.ui.sql import pick_resolution, resolution_for, rollup_rows, rollups_present

START = datetime(2026, 11, 30, 9, 0, 0)
SECONDS = 3 * 3600
NODES, GPUS, PORTS = 2, 4, 2
#: Wider than the data, so every resolution sees all of it, and bucketed by the hour at both rollups.
ALL_S = 5 * 86400.0


@pytest.fixture(scope="module")
def cur(tmp_path_factory):
    rng = np.random.default_rng(5)
    store = Store(tmp_path_factory.mktemp("ui-rollup") / "c4.duckdb", load())
    s, n, k = (
        a.ravel() for a in np.meshgrid(np.arange(SECONDS), np.arange(NODES), np.arange(GPUS), indexing="ij")
    )
    ts = [START + timedelta(seconds=float(x)) for x in s + 0.2]
    store.commit(
        [
            PendingBatch(
                "",
                0,
                load()["gpu_samples"],
                catalogue_table(
                    "gpu_samples",
                    {
                        "ts": ts,
                        "node": [f"host{i}" for i in n],
                        "job": [""] * len(s),
                        "gpu_index": k.tolist(),
                        "util_gpu_pct": rng.uniform(0, 100, len(s)).tolist(),
                    },
                ),
            )
        ]
    )
    s, n, p = (
        a.ravel() for a in np.meshgrid(np.arange(SECONDS), np.arange(NODES), np.arange(PORTS), indexing="ij")
    )
    per_s = rng.uniform(1e9, 3e9, (SECONDS, NODES * PORTS))
    tx = np.cumsum(per_s, axis=0).ravel()
    retrans = np.cumsum(rng.integers(0, 3, (SECONDS, NODES * PORTS)), axis=0).ravel()
    store.commit(
        [
            PendingBatch(
                "",
                0,
                load()["ib_port_samples"],
                catalogue_table(
                    "ib_port_samples",
                    {
                        "ts": [START + timedelta(seconds=float(x)) for x in s + 0.4],
                        "node": [f"host{i}" for i in n],
                        "job": [""] * len(s),
                        "device": [f"mlx5_{i}" for i in p],
                        "port": [1] * len(s),
                        "state": ["ACTIVE"] * len(s),
                        "rate_bps": [400_000_000_000] * len(s),
                        "tx_bytes": tx.astype(np.uint64).tolist(),
                        "rx_bytes": (tx // 2).astype(np.uint64).tolist(),
                        "roce_adp_retrans": retrans.tolist(),
                        "local_ack_timeout_err": (retrans // 3).tolist(),
                        "rp_cnp_handled": retrans.tolist(),
                    },
                ),
            )
        ]
    )
    s, n, k = (
        a.ravel() for a in np.meshgrid(np.arange(SECONDS), np.arange(NODES), np.arange(GPUS), indexing="ij")
    )
    exec_us = rng.uniform(5e3, 2e4, len(s))
    store.commit(
        [
            PendingBatch(
                "",
                0,
                load()["nccl_collectives"],
                catalogue_table(
                    "nccl_collectives",
                    {
                        "ts": [START + timedelta(seconds=float(x)) for x in s + 0.6],
                        "node": [f"host{i}" for i in n],
                        "hostname": [f"host{i}" for i in n],
                        "job": ["train"] * len(s),
                        "comm_id": ["0xc0"] * len(s),
                        "rank": (n * GPUS + k).tolist(),
                        "n_ranks": [NODES * GPUS] * len(s),
                        "nnodes": [NODES] * len(s),
                        "kind": ["coll"] * len(s),
                        "coll": ["AllReduce"] * len(s),
                        "coll_sn": s.tolist(),
                        "msg_size_bytes": [1 << 26] * len(s),
                        "exec_time_us": exec_us.tolist(),
                        "busbw_gbs": ((1 << 27) / exec_us / 1e3).tolist(),
                    },
                ),
            )
        ]
    )
    roll_all(store, now=START + timedelta(seconds=SECONDS + 3600))
    c = store.cursor()
    yield c
    c.close()
    store.close()


def _rows(cur, sql: str, key: tuple[str, ...]) -> dict:
    table = cur.execute(sql).to_arrow_table().to_pylist()
    return {tuple(r[k] for k in key): r for r in table}


def _same(a: dict, b: dict, cols: tuple[str, ...]) -> None:
    assert a and a.keys() == b.keys()
    for key in a:
        for c in cols:
            assert b[key][c] == pytest.approx(a[key][c], rel=1e-9), (key, c)


def test_windows_choose_raw_minute_or_hour_data():
    assert [resolution_for(w) for w in (900, 3600, 6 * 3600, 2 * 86400, 7 * 86400)] == [
        "raw",
        "raw",
        "1m",
        "1m",
        "1h",
    ]


def test_utilization_series_is_the_same_from_raw_samples_and_minute_rollups(cur):
    raw = _rows(cur, overview.utilization_series(7200, "raw"), ("t",))
    minute = _rows(cur, overview.utilization_series(7200, "1m"), ("t",))
    inner = sorted(set(raw) & set(minute))[1:-1]  # the window's edges cut a bucket differently
    assert len(inner) > 100
    _same({k: raw[k] for k in inner}, {k: minute[k] for k in inner}, ("mean_util_pct", "min_util_pct"))


def test_every_rolled_series_is_the_same_from_minute_and_hour_rollups(cur):
    for sql, key, cols in [
        (overview.utilization_series, ("t",), ("mean_util_pct", "min_util_pct")),
        (bandwidth.cluster_series, ("t",), ("tx_gbps", "rx_gbps", "retransmits", "cnps_handled")),
        (
            bandwidth.port_table,
            ("node", "device", "port"),
            ("tx_gbps", "rx_gbps", "retransmits", "rate_ratio"),
        ),
    ]:
        minute, hour = (_rows(cur, sql(ALL_S, r), key) for r in ("1m", "1h"))
        assert len(minute) == len(hour) >= 2
        _same(minute, hour, cols)
    one = [bandwidth.port_series(ALL_S, "host1", "mlx5_0", 1, r) for r in ("1m", "1h")]
    _same(*(_rows(cur, sql, ("t",)) for sql in one), ("tx_gbps", "rx_gbps", "rate_gbps", "retransmits"))


def test_port_rates_from_rollups_are_bytes_moved_over_seconds_as_from_raw_counters(cur):
    raw = _rows(cur, bandwidth.port_table(SECONDS, "raw"), ("node", "device", "port"))
    rolled = _rows(cur, bandwidth.port_table(SECONDS, "1m"), ("node", "device", "port"))
    assert raw.keys() == rolled.keys()
    for key in raw:
        # the raw page measures from the first sample in the window, the rollup from the sample before it
        assert rolled[key]["tx_gbps"] == pytest.approx(raw[key]["tx_gbps"], rel=2 / SECONDS)
        assert rolled[key]["retransmits"] == pytest.approx(raw[key]["retransmits"], abs=4)


def test_collective_pages_are_the_same_from_raw_minute_and_hour_data(cur):
    """Bus bandwidth series, jobs, communicators and per-rank bandwidth from raw rows and both rollups."""
    raw = _rows(cur, overview.busbw_series(7200, "raw"), ("t",))
    minute = _rows(cur, overview.busbw_series(7200, "1m"), ("t",))
    inner = sorted(set(raw) & set(minute))[1:-1]
    assert len(inner) > 100
    _same({k: raw[k] for k in inner}, {k: minute[k] for k in inner}, ("mean_busbw_gbs", "min_busbw_gbs"))
    for sql, key, cols in [
        (overview.busbw_series, ("t",), ("mean_busbw_gbs", "min_busbw_gbs")),
        (overview.jobs, ("job", "comm_id"), ("ranks", "ranks_seen", "nodes", "last_seq", "mean_busbw_gbs")),
        (collectives.communicators, ("comm_id",), ("ranks", "nodes", "last_seq")),
        (bandwidth.rank_busbw, ("comm_id", "rank"), ("mean_busbw_gbs", "min_busbw_gbs", "collectives")),
    ]:
        by = {r: _rows(cur, sql(ALL_S, r), key) for r in ("raw", "1m", "1h")}
        assert len(by["raw"]) >= 1
        _same(by["raw"], by["1m"], cols)
        _same(by["raw"], by["1h"], cols)
    jobs = {r: _rows(cur, overview.jobs(ALL_S, r), ("job", "comm_id")) for r in ("raw", "1h")}
    assert jobs["raw"][("train", "0xc0")]["hosts"] == jobs["1h"][("train", "0xc0")]["hosts"] == "host0, host1"
    comm = _rows(cur, collectives.communicators(ALL_S, "1h"), ("comm_id",))[("0xc0",)]
    mean_ms = cur.execute("SELECT avg(exec_time_us) / 1e3 FROM nccl_collectives").fetchone()[0]
    assert comm["mean_exec_ms"] == pytest.approx(mean_ms, rel=1e-9)


def test_pages_fall_back_to_raw_rows_where_no_rollup_holds_rows(cur):
    """A young store or a lake (rollups empty) reads raw rows at every window; hours missing, minutes serve."""
    assert cur.execute(rollups_present("gpu_samples")).fetchone() == (True, True)
    assert cur.execute(rollups_present("nccl_connections")).fetchone() == (False, False)
    week = 7 * 86400.0
    assert pick_resolution(week, {"m": True, "h": True}) == "1h"
    assert pick_resolution(week, {"m": True, "h": False}) == "1m"
    assert pick_resolution(week, {"m": False, "h": False}) == "raw"
    assert pick_resolution(86400.0, {"m": False, "h": True}) == "raw"
    assert pick_resolution(week, {"m": False, "h": True}) == "raw"
    assert pick_resolution(900.0, {"m": True, "h": True}) == "raw"


def _totals(cur, table: str, window_s: float, whole_hours: bool) -> tuple:
    sql = (
        "SELECT sum(samples), sum(util_gpu_pct_mean * util_gpu_pct_n), min(util_gpu_pct_min), max(util_gpu_pct_max), "
        f"min(ts), count(DISTINCT node || gpu_index) FROM {rollup_rows(table, window_s, '1m', whole_hours)}"
    )
    return cur.execute(sql).fetchone()


def test_whole_hours_from_the_hourly_rollup_and_the_rest_from_minutes_are_the_minutes(cur):
    """Windows cutting an hour: the mixed rows give the minutes' sums, extremes and counts; also while the
    hourly rollup lags (its newest hour not rolled yet: that hour comes from the minutes)."""
    for window_s in (5400.0, 7800.0, 2 * 3600.0, ALL_S):
        mixed, minutes = (
            _totals(cur, "gpu_samples", window_s, True),
            _totals(cur, "gpu_samples", window_s, False),
        )
        assert minutes[0] and mixed[:4] == pytest.approx(minutes[:4], rel=1e-12) and mixed[4:] == minutes[4:]
    cur.execute("BEGIN TRANSACTION")
    try:
        for lag in ("ts = (SELECT max(ts) FROM gpu_samples_1h)", "true"):  # one hour behind; none rolled yet
            cur.execute(f"DELETE FROM gpu_samples_1h WHERE {lag}")
            for window_s in (5400.0, ALL_S):
                mixed = _totals(cur, "gpu_samples", window_s, True)
                minutes = _totals(cur, "gpu_samples", window_s, False)
                assert mixed[:4] == pytest.approx(minutes[:4], rel=1e-12) and mixed[4:] == minutes[4:]
    finally:
        cur.execute("ROLLBACK")
