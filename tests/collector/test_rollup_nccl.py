"""NCCL rollups (per communicator, rank and op; per connection) give the raw numbers over the same interval.

A real DuckDB store with the shipped catalogue: nccl_collectives of two communicators whose ranks run two
ops each (some durations missing), and nccl_connections with their NIC ports, two hours, rolled by the
collector's own code. Counts, bytes, duration and bandwidth statistics, the last sequence number and the
connection sums come out the same from the raw rows, the minute and the hour rollups.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
from testkit.payloads import catalogue_table

from c4.catalogue import Catalogue, CatalogueError, load
from c4.collector.rollup import roll_all
from c4.collector.store import PendingBatch, Store

START = datetime(2026, 12, 1, 10, 0, 0)
HOURS = 2
RANKS = 4


@pytest.fixture(scope="module")
def cur(tmp_path_factory):
    rng = np.random.default_rng(11)
    store = Store(tmp_path_factory.mktemp("nccl-rollup") / "c4.duckdb", load())
    secs = np.arange(0, HOURS * 3600, 2.0)
    s, c, r, o = (
        a.ravel() for a in np.meshgrid(secs, np.arange(2), np.arange(RANKS), np.arange(2), indexing="ij")
    )
    n = len(s)
    exec_us = rng.normal(1e4, 2e3, n)
    missing = rng.random(n) < 0.05
    coll = np.where(o == 0, "AllReduce", "AllGather")
    size = np.where(o == 0, 1 << 26, 1 << 20) * (1 + (s.astype(int) // 600) % 3)
    store.commit(
        [
            PendingBatch(
                "",
                0,
                load()["nccl_collectives"],
                catalogue_table(
                    "nccl_collectives",
                    {
                        "ts": [START + timedelta(seconds=float(x)) for x in s + rng.uniform(0, 1, n)],
                        "node": [f"host{i // 2}" for i in r],
                        "hostname": [f"host{i // 2}" for i in r],
                        "job": ["train"] * n,
                        "comm_id": [f"0xc{i}" for i in c],
                        "rank": r.tolist(),
                        "n_ranks": [RANKS] * n,
                        "kind": ["coll"] * n,
                        "coll": coll.tolist(),
                        "coll_sn": (s // 2 * 2 + o).astype(np.int64).tolist(),
                        "msg_size_bytes": size.astype(np.uint64).tolist(),
                        "exec_time_us": [
                            None if m else float(v) for m, v in zip(missing, exec_us, strict=True)
                        ],
                        "busbw_gbs": (size / exec_us / 1e3).tolist(),
                    },
                ),
            )
        ]
    )
    s, r, ch = (a.ravel() for a in np.meshgrid(secs, np.arange(RANKS), np.arange(2), indexing="ij"))
    n = len(s)
    store.commit(
        [
            PendingBatch(
                "",
                0,
                load()["nccl_connections"],
                catalogue_table(
                    "nccl_connections",
                    {
                        "ts": [START + timedelta(seconds=float(x)) for x in s + 0.5],
                        "node": [f"host{i // 2}" for i in r],
                        "job": ["train"] * n,
                        "comm_hash": ["0xc0"] * n,
                        "rank": r.tolist(),
                        "peer_rank": ((r + 1) % RANKS).tolist(),
                        "channel": ch.tolist(),
                        "direction": ["send"] * n,
                        "nic_device": [f"mlx5_{i}" for i in ch],
                        "nic_port": [1] * n,
                        "window_s": [2.0] * n,
                        "ops": rng.integers(1, 10, n).tolist(),
                        "steps": rng.integers(10, 1000, n).tolist(),
                        "bytes": rng.integers(1 << 20, 1 << 30, n).tolist(),
                        "transfer_us": rng.uniform(1e3, 1e5, n).tolist(),
                        "wait_peer_us": rng.uniform(0, 1e3, n).tolist(),
                    },
                ),
            )
        ]
    )
    assert roll_all(store, now=START + timedelta(hours=HOURS, minutes=5)) > 0
    c = store.cursor()
    yield c
    c.close()
    store.close()


OP = ("comm_id", "rank", "kind", "coll")


def _by(cur, sql: str, key: tuple[str, ...]) -> dict:
    return {tuple(r[k] for k in key): r for r in cur.execute(sql).to_arrow_table().to_pylist()}


def _same(a: dict, b: dict) -> None:
    assert a and a.keys() == b.keys()
    for key, want in a.items():
        for col, w in want.items():
            g = b[key][col]
            if w is None or g is None:
                assert w is None and g is None, (key, col)
            elif isinstance(w, int | float):
                assert g == pytest.approx(w, rel=1e-9), (key, col, w, g)
            else:
                assert g == w, (key, col)


def _raw_ops(cur, a: datetime, b: datetime) -> dict:
    return _by(
        cur,
        f"""SELECT comm_id, rank, kind, coll, any_value(hostname) AS host, count(*) AS collectives,
                   sum(msg_size_bytes)::DOUBLE AS bytes, min(exec_time_us) AS exec_min, avg(exec_time_us) AS exec_mean,
                   max(exec_time_us) AS exec_max, arg_max(exec_time_us, ts) FILTER (WHERE exec_time_us IS NOT NULL) AS exec_last,
                   avg(busbw_gbs) AS busbw_mean, min(busbw_gbs) AS busbw_min, max(coll_sn)::DOUBLE AS last_seq
            FROM nccl_collectives WHERE ts >= '{a}' AND ts < '{b}' GROUP BY ALL""",
        OP,
    )


def _rolled_ops(cur, table: str, a: datetime, b: datetime) -> dict:
    return _by(
        cur,
        f"""SELECT comm_id, rank, kind, coll, any_value(hostname) AS host, sum(samples) AS collectives,
                   sum(msg_size_bytes_mean * msg_size_bytes_n) AS bytes, min(exec_time_us_min) AS exec_min,
                   sum(exec_time_us_mean * exec_time_us_n) / sum(exec_time_us_n) AS exec_mean,
                   max(exec_time_us_max) AS exec_max,
                   arg_max(exec_time_us_last, ts) FILTER (WHERE exec_time_us_last IS NOT NULL) AS exec_last,
                   sum(busbw_gbs_mean * busbw_gbs_n) / sum(busbw_gbs_n) AS busbw_mean, min(busbw_gbs_min) AS busbw_min,
                   max(coll_sn_max) AS last_seq
            FROM {table} WHERE ts >= '{a}' AND ts < '{b}' GROUP BY ALL""",
        OP,
    )


def test_collective_rollups_per_communicator_rank_and_op_equal_raw(cur):
    assert cur.execute("SELECT count(DISTINCT coll) FROM nccl_collectives_1m").fetchone()[0] == 2
    for a, b in [
        (START + timedelta(minutes=13), START + timedelta(minutes=14)),
        (START + timedelta(minutes=7), START + timedelta(minutes=101)),
    ]:
        _same(_raw_ops(cur, a, b), _rolled_ops(cur, "nccl_collectives_1m", a, b))
    for hour in range(HOURS):
        a, b = START + timedelta(hours=hour), START + timedelta(hours=hour + 1)
        raw = _raw_ops(cur, a, b)
        _same(raw, _rolled_ops(cur, "nccl_collectives_1m", a, b))
        _same(raw, _rolled_ops(cur, "nccl_collectives_1h", a, b))


def test_connection_rollups_sum_to_the_raw_records_with_their_ports(cur):
    key = ("rank", "peer_rank", "channel", "nic_device")
    cols = ("bytes", "transfer_us", "ops", "steps", "wait_peer_us")
    a, b = START, START + timedelta(hours=HOURS)
    raw = _by(
        cur,
        f"SELECT {', '.join(key)}, count(*) AS n, {', '.join(f'sum({c})::DOUBLE AS {c}' for c in cols)} "
        f"FROM nccl_connections WHERE ts >= '{a}' AND ts < '{b}' GROUP BY ALL",
        key,
    )
    for table in ("nccl_connections_1m", "nccl_connections_1h"):
        rolled = _by(
            cur,
            f"SELECT {', '.join(key)}, sum(samples) AS n, "
            f"{', '.join(f'sum({c}_mean * {c}_n) AS {c}' for c in cols)} "
            f"FROM {table} WHERE ts >= '{a}' AND ts < '{b}' GROUP BY ALL",
            key,
        )
        _same(raw, rolled)


def test_rollup_by_is_refused_where_it_would_split_a_counters_series(tmp_path):
    (tmp_path / "t.toml").write_text(
        '[tables.x]\nhelp = "h"\nrollup = true\nrollup_by = ["op"]\ncolumns = [\n'
        '{ name = "op", type = "VARCHAR", kind = "label", help = "o" },\n'
        '{ name = "c", type = "UBIGINT", kind = "counter", help = "c" }]\n'
    )
    with pytest.raises(CatalogueError, match="x.*rollup_by is for tables without counters"):
        Catalogue.from_dir(tmp_path)
    (tmp_path / "t.toml").write_text(
        '[tables.x]\nhelp = "h"\nrollup = true\nrollup_stats = ["op"]\ncolumns = [\n'
        '{ name = "op", type = "VARCHAR", kind = "label", help = "o" },\n'
        '{ name = "g", type = "DOUBLE", kind = "gauge", help = "g" }]\n'
    )
    with pytest.raises(CatalogueError, match="x.*rollup_stats 'op' is not numeric"):
        Catalogue.from_dir(tmp_path)
