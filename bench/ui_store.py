"""A synthetic store for `c4 bench ui`: N nodes x 8 GPUs x 8 NIC ports at 1 Hz for M minutes, plus faults, the
job's goodput accounts and a plan.

Rows go straight into a DuckDB file through the collector's own Store (bulk Arrow appends); a real
collector then serves the file and the benchmark times the pages' queries through the Query RPC.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from c4.catalogue import load
from c4.catalogue.rollup import RESOLUTIONS_S, rollup_name
from c4.collector.rollup import Step, floor_to, raw_sql
from c4.collector.store import PendingBatch, Store
from c4.sim.twin import ClusterTwin
from c4.traffic.export import link_table, plan_run_row, plan_run_table, plan_table
from c4.traffic.planner import Planner

GPUS = 8
PORTS = 8
CHUNK_S = 60
#: The faulty components the synthetic store carries (a slow port and an Xid), like a real incident.
SLOW_NODE, SLOW_DEVICE, XID_NODE, XID_GPU = 17, 3, 42, 5
#: Seconds between the diagnosis passes whose job accounts the store holds (each pass writes the whole account
#: again, so job_accounting grows with passes x intervals and job_accounting_current has to pick the newest).
ACCOUNT_PASS_S = 10
#: Length of one accounted interval (the account splits the job's time minute by minute).
ACCOUNT_INTERVAL_S = 60


def _table(name: str, n: int, cols: dict[str, object]) -> pa.Table:
    """A table with the catalogue's full schema: the given columns, NULL for the rest."""
    schema = load()[name].arrow_schema
    arrays = []
    for field in schema:
        v = cols.get(field.name)
        if v is None:
            arrays.append(pa.nulls(n, field.type))
        elif isinstance(v, pa.Array):
            arrays.append(v.cast(field.type))
        elif np.isscalar(v) or isinstance(v, str):
            arrays.append(pa.array(np.full(n, v) if not isinstance(v, str) else [v] * n, field.type))
        else:
            arrays.append(pa.array(v, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _ts(base: datetime, seconds: np.ndarray) -> pa.Array:
    us = np.datetime64(base, "us") + (seconds * 1e6).astype("timedelta64[us]")
    return pa.array(us, pa.timestamp("us"))


class Builder:
    """Generates the store chunk by chunk (bounded memory) and commits each chunk as one transaction."""

    def __init__(self, path: Path, nodes: int, minutes: float, seed: int = 0) -> None:
        self.path = Path(path)
        self.nodes = nodes
        self.seconds = int(minutes * 60)
        self.rng = np.random.default_rng(seed)
        self.end = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        self.start = self.end - timedelta(seconds=self.seconds)
        self.hosts = np.array([f"host{i}" for i in range(nodes)])
        self.tx = np.zeros(nodes * PORTS)
        self.retrans = np.zeros(nodes * PORTS)

    def build(self, progress=None) -> dict[str, int]:
        """Write every table; returns rows per table."""
        store = Store(self.path, load())
        rows: dict[str, int] = {}
        try:
            for t0 in range(0, self.seconds, CHUNK_S):
                secs = np.arange(t0, min(t0 + CHUNK_S, self.seconds), dtype=np.float64)
                for name, table in (
                    ("gpu_samples", self._gpus(secs)),
                    ("ib_port_samples", self._ports(secs)),
                    ("nccl_collectives", self._collectives(secs)),
                    ("nccl_connections", self._connections(secs)),
                ):
                    store.commit([PendingBatch("", 0, load()[name], table)])
                    rows[name] = rows.get(name, 0) + table.num_rows
                if progress:
                    progress(len(secs))
            for name, table in self._faults_and_actions().items():
                store.commit([PendingBatch("", 0, load()[name], table)])
                rows[name] = table.num_rows
            table = self._accounting()
            store.commit([PendingBatch("", 0, load()["job_accounting"], table)])
            rows["job_accounting"] = table.num_rows
            for name, table in self._plan().items():
                store.commit([PendingBatch("", 0, load()[name], table)])
                rows[name] = table.num_rows
            store.checkpoint()
        finally:
            store.close()
        return rows

    def _grid(self, secs: np.ndarray, per_node: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(seconds, node index, local index) for every (second, node, local) combination."""
        s, n, k = np.meshgrid(secs, np.arange(self.nodes), np.arange(per_node), indexing="ij")
        return s.ravel(), n.ravel(), k.ravel()

    def _gpus(self, secs: np.ndarray) -> pa.Table:
        s, n, g = self._grid(secs, GPUS)
        size = len(s)
        util = np.clip(self.rng.normal(95, 2, size), 0, 100)
        clock = np.full(size, 1980.0)
        hot = (n == XID_NODE) & (g == XID_GPU)
        clock[hot] = 1400.0
        return _table(
            "gpu_samples",
            size,
            {
                "ts": _ts(self.start, s + n * 1e-3),
                "node": self.hosts[n],
                "job": "train",
                "gpu_index": g,
                "util_gpu_pct": util,
                "temp_gpu_c": self.rng.normal(62, 1.5, size),
                "clock_sm_mhz": clock,
                "power_w": self.rng.normal(650, 10, size),
                "mem_used_bytes": np.full(size, 60 << 30, dtype=np.uint64),
            },
        )

    def _ports(self, secs: np.ndarray) -> pa.Table:
        s, n, p = self._grid(secs, PORTS)
        size = len(s)
        slow = (n == SLOW_NODE) & (p == SLOW_DEVICE)
        rate = np.where(slow, 200e9, 400e9)
        per_s = np.where(slow, 10e9, 20e9) * self.rng.uniform(0.97, 1.03, size)
        steps = len(secs)
        per_s = per_s.reshape(steps, -1)
        tx = self.tx + np.cumsum(per_s, axis=0)
        self.tx = tx[-1]
        retrans_step = np.where(slow.reshape(steps, -1), 40.0, 0.0)
        retrans = self.retrans + np.cumsum(retrans_step, axis=0)
        self.retrans = retrans[-1]
        return _table(
            "ib_port_samples",
            size,
            {
                "ts": _ts(self.start, s + n * 1e-3),
                "node": self.hosts[n],
                "job": "train",
                "device": np.char.add("mlx5_", p.astype(str)),
                "port": np.ones(size, dtype=np.int32),
                "link_layer": "Ethernet",
                "state": "ACTIVE",
                "state_code": np.full(size, 4, dtype=np.int32),
                "rate_bps": rate.astype(np.uint64),
                "tx_bytes": tx.ravel().astype(np.uint64),
                "rx_bytes": tx.ravel().astype(np.uint64),
                "roce_adp_retrans": retrans.ravel().astype(np.uint64),
                "local_ack_timeout_err": (retrans.ravel() // 4).astype(np.uint64),
                "rp_cnp_handled": np.zeros(size, dtype=np.uint64),
                "np_cnp_sent": np.zeros(size, dtype=np.uint64),
            },
        )

    def _collectives(self, secs: np.ndarray) -> pa.Table:
        s, n, g = self._grid(secs, GPUS)
        size = len(s)
        rank = n * GPUS + g
        exec_us = self.rng.normal(180e3, 5e3, size)
        exec_us[n == SLOW_NODE] *= 1.4
        start = s + self.rng.uniform(0, 0.005, size)
        return _table(
            "nccl_collectives",
            size,
            {
                "ts": _ts(self.start, s + 0.5),
                "node": self.hosts[n],
                "job": "train",
                "comm_id": "0x7c4c4c4c00000001",
                "rank": rank,
                "n_ranks": np.full(size, self.nodes * GPUS, dtype=np.int32),
                "nnodes": np.full(size, self.nodes, dtype=np.int32),
                "kind": "coll",
                "coll": "AllReduce",
                "coll_sn": int(self.start.replace(tzinfo=UTC).timestamp())
                + s.astype(np.int64),  # one a second
                "msg_size_bytes": np.full(size, 1 << 34, dtype=np.uint64),
                "exec_time_us": exec_us,
                "timing_source": "kernel_gpu",
                "algobw_gbs": 17179869184 / exec_us / 1e3,
                "busbw_gbs": 2 * 17179869184 / exec_us / 1e3,
                "start_ts": _ts(self.start, start),
                "hostname": self.hosts[n],
            },
        )

    def _connections(self, secs: np.ndarray) -> pa.Table:
        s, n, c = self._grid(secs, PORTS)
        size = len(s)
        rank = n * GPUS + c
        peer = ((n + 1) % self.nodes) * GPUS + c
        slow = (n == SLOW_NODE) & (c == SLOW_DEVICE)
        transfer = np.where(slow, 160e3, 80e3) * self.rng.uniform(0.97, 1.03, size)
        nbytes = np.full(size, 4_160_749_568, dtype=np.uint64)
        return _table(
            "nccl_connections",
            size,
            {
                "ts": _ts(self.start, s + 0.9),
                "node": self.hosts[n],
                "job": "train",
                "comm_hash": "0x7c4c4c4c00000001",
                "rank": rank,
                "peer_rank": peer,
                "channel": c,
                "direction": "send",
                "nic_device": np.char.add("mlx5_", c.astype(str)),
                "nic_port": np.ones(size, dtype=np.int32),
                "window_s": np.ones(size),
                "ops": np.ones(size, dtype=np.uint64),
                "steps": np.full(size, 992, dtype=np.uint64),
                "bytes": nbytes,
                "transfer_us": transfer,
                "wait_peer_us": self.rng.uniform(0, 5e3, size),
                "wait_gpu_us": np.full(size, 50.0),
                "throughput_gbps": nbytes * 8 / (transfer * 1e3),
            },
        )

    def _faults_and_actions(self) -> dict[str, pa.Table]:
        """Two faults re-detected every 10 s for the last half of the window, plus their alerts."""
        rows = []
        onset = self.start + timedelta(seconds=self.seconds // 2)
        port = f"host{SLOW_NODE}/mlx5_{SLOW_DEVICE}p1"
        gpu = f"host{XID_NODE}/gpu{XID_GPU}"
        specs = [
            (
                "nic_rate",
                "hardware",
                "nic_port",
                port,
                f"host{SLOW_NODE}",
                "replace_cable",
                f"{port} runs at 200 Gb/s",
            ),
            ("xid48", "hardware", "gpu", gpu, f"host{XID_NODE}", "drain_node", f"Xid 48 on {gpu}"),
        ]
        for k in range(0, self.seconds // 2, 10):
            ts = onset + timedelta(seconds=k)
            for det, cls, ctype, comp, node, action, summary in specs:
                rows.append(
                    {
                        "ts": ts,
                        "node": node,
                        "job": "train",
                        "fault_id": f"{det}:{comp}",
                        "detector": det,
                        "fault_class": cls,
                        "component_type": ctype,
                        "component": comp,
                        "first_seen": onset,
                        "last_seen": ts,
                        "confidence": 0.9,
                        "action": action,
                        "state": "open",
                        "summary": summary,
                        "evidence_json": json.dumps({"bench": True}),
                        "evidence_sql": f"SELECT * FROM faults WHERE component = '{comp}' ORDER BY ts DESC LIMIT 20",
                    }
                )
        actions = [
            {
                "ts": onset,
                "node": r["node"],
                "job": "train",
                "fault_id": r["fault_id"],
                "sink": "webhook",
                "target": "http://alerts.example/c4",
                "fault_state": "open",
                "outcome": "sent",
                "attempts": 1,
                "detail": "200",
            }
            for r in rows[:2]
        ]
        return {
            "faults": pa.Table.from_pylist(rows, schema=load()["faults"].arrow_schema),
            "actions": pa.Table.from_pylist(actions, schema=load()["actions"].arrow_schema),
        }

    def _category(self, minute: int) -> tuple[str, float, str]:
        """What one minute of the job was: (category, lost fraction, fault_id). At the faults' onset (half way)
        the Xid hangs the job a minute, the restart takes one and two minutes are redone; the slow port then
        slows it by a quarter; every 15th minute before is lost to what no fault explains."""
        port = f"nic_rate:host{SLOW_NODE}/mlx5_{SLOW_DEVICE}p1"
        xid = f"xid48:host{XID_NODE}/gpu{XID_GPU}"
        k = minute - self.seconds // 2 // ACCOUNT_INTERVAL_S
        if k < 0:
            return ("unexplained", 1.0, "") if minute % 15 == 14 else ("productive", 0.0, "")
        return {
            0: ("hung", 1.0, xid),
            1: ("restarting", 1.0, xid),
            2: ("redone", 1.0, xid),
            3: ("redone", 1.0, xid),
        }.get(k, ("slowed", 0.25, port))

    def _accounting(self) -> pa.Table:
        """job_accounting as the collector's passes write it: every ACCOUNT_PASS_S the job's whole account so far."""
        gpus = self.nodes * GPUS
        restart_s = self.seconds // 2 // ACCOUNT_INTERVAL_S * ACCOUNT_INTERVAL_S + 2 * ACCOUNT_INTERVAL_S
        rows = []
        for p in range(ACCOUNT_PASS_S, self.seconds + 1, ACCOUNT_PASS_S):
            for a in range(0, p, ACCOUNT_INTERVAL_S):
                b = min(a + ACCOUNT_INTERVAL_S, p)
                category, frac, fid = self._category(a // ACCOUNT_INTERVAL_S)
                lost = (b - a) * frac
                rows.append(
                    {
                        "ts": self.start + timedelta(seconds=a),
                        "node": "",
                        "job": "train",
                        "end_ts": self.start + timedelta(seconds=b),
                        "category": category,
                        "wall_s": float(b - a),
                        "lost_s": lost,
                        "gpus": gpus,
                        "gpu_hours_lost": lost * gpus / 3600,
                        "fault_id": fid,
                        "fault_class": "hardware" if fid else "",
                        "component": fid.partition(":")[2],
                        "run": int(a >= restart_s),
                        "computed_at": self.start + timedelta(seconds=p),
                    }
                )
        return pa.Table.from_pylist(rows, schema=load()["job_accounting"].arrow_schema)

    def _plan(self) -> dict[str, pa.Table]:
        """A C4P plan of the cluster's ring all-reduce with its link loads and its plan_runs row."""

        twin = ClusterTwin(nodes=self.nodes, leaves=max(1, self.nodes // 16), spines=8)
        plan = Planner(twin.topo, max_qps=4).plan(twin.flows)
        links = link_table(plan, "plan-bench", ecmp_seeds=2)
        run = plan_run_row(plan, "plan-bench", twin.job_name(twin.hosts[0]), "initial", ecmp_seeds=2)
        return {
            "plans": plan_table(plan, "plan-bench", run["max_load_over_bound"]),
            "plan_links": links,
            "plan_runs": plan_run_table(run),
        }


#: Synthetic rollup columns of the week-long case: per rolled-up table, the statistics the pages read
#: (SQL over the bucket index ``b``, node ``n``, local index ``k`` and ``{width}``, the bucket's seconds); every other
#: column stays NULL.
ROLLUP_VALUES: dict[str, dict[str, str]] = {
    "gpu_samples": {
        "gpu_index": "k",
        "util_gpu_pct_min": "80 + 10 * random()",
        "util_gpu_pct_mean": "93 + 4 * random()",
        "util_gpu_pct_max": "100.0",
        "util_gpu_pct_last": "90 + 10 * random()",
        "power_w_mean": "640 + 20 * random()",
        "temp_gpu_c_max": "60 + 10 * random()",
    },
    "ib_port_samples": {
        "device": "'mlx5_' || k",
        "port": "1",
        "rate_bps_min": f"CASE WHEN n = {SLOW_NODE} AND k = {SLOW_DEVICE} THEN 200e9 ELSE 400e9 END",
        "rate_bps_max": f"CASE WHEN n = {SLOW_NODE} AND k = {SLOW_DEVICE} THEN 200e9 ELSE 400e9 END",
        "tx_bytes_increase": "{width} * (19.4e9 + 1.2e9 * random())",
        "tx_bytes_span_s": "{width}",
        "rx_bytes_increase": "{width} * (19.4e9 + 1.2e9 * random())",
        "rx_bytes_span_s": "{width}",
        "tx_bytes_rate_mean": "19.4e9 + 1.2e9 * random()",
        "roce_adp_retrans_increase": f"CASE WHEN n = {SLOW_NODE} AND k = {SLOW_DEVICE} THEN 40 * {{width}} ELSE 0 END",
        "local_ack_timeout_err_increase": f"CASE WHEN n = {SLOW_NODE} AND k = {SLOW_DEVICE} THEN 10 * {{width}} ELSE 0 END",
        "rp_cnp_handled_increase": "0",
        "np_cnp_sent_increase": "0",
        "link_downed_increase": "0",
        "symbol_errors_increase": "0",
    },
    "nccl_collectives": {
        "comm_id": "'0x7c4c4c4c00000001'",
        "rank": f"n * {GPUS} + k",
        "hostname": "'host' || n",
        "kind": "'coll'",
        "coll": "'AllReduce'",
        "n_ranks_max": f"{{nodes}} * {GPUS}",
        "nnodes_max": "{nodes}",
        # one a second as the raw rows count them, up to the newest raw sample (one minute before ``before``)
        "coll_sn_max": "least({first_epoch} + (b + 1) * {width}, {before_epoch} - 60) - 1",
        "msg_size_bytes_mean": str(1 << 34),
        "msg_size_bytes_n": "{width}",
        "exec_time_us_min": f"CASE WHEN n = {SLOW_NODE} THEN 240e3 ELSE 170e3 END",
        "exec_time_us_mean": f"CASE WHEN n = {SLOW_NODE} THEN 252e3 ELSE 180e3 END",
        "exec_time_us_max": f"CASE WHEN n = {SLOW_NODE} THEN 265e3 ELSE 190e3 END",
        "exec_time_us_n": "{width}",
        "busbw_gbs_min": f"CASE WHEN n = {SLOW_NODE} THEN 130 ELSE 180 END",
        "busbw_gbs_mean": f"CASE WHEN n = {SLOW_NODE} THEN 136 + random() ELSE 190 + random() END",
        "busbw_gbs_max": "200.0",
        "busbw_gbs_n": "{width}",
    },
    "nccl_connections": {
        "comm_hash": "'0x7c4c4c4c00000001'",
        "rank": f"n * {GPUS} + k",
        "peer_rank": f"(n + 1) % {{nodes}} * {GPUS} + k",
        "channel": "k",
        "direction": "'send'",
        "nic_device": "'mlx5_' || k",
        "nic_port": "1",
        "ops_mean": "1.0",
        "ops_n": "{width}",
        "steps_mean": "992.0",
        "steps_n": "{width}",
        "bytes_mean": "4160749568.0",
        "bytes_n": "{width}",
        "transfer_us_mean": f"CASE WHEN n = {SLOW_NODE} AND k = {SLOW_DEVICE} THEN 160e3 ELSE 80e3 END",
        "transfer_us_n": "{width}",
        "wait_peer_us_mean": "2.5e3",
        "wait_peer_us_n": "{width}",
    },
}


def add_rollups(
    path: Path, nodes: int, before: datetime, hours: float, minute_hours: float
) -> dict[str, int]:
    """Rollup rows written straight with DuckDB SQL (no raw week is ingested): hourly buckets for ``hours`` and
    minute buckets for the last ``minute_hours`` before ``before``; returns rows per rollup table."""
    store = Store(path, load())
    rows: dict[str, int] = {}
    try:
        cur = store.cursor()
        for res, span_h in (("1h", hours), ("1m", minute_hours)):
            width = RESOLUTIONS_S[res]
            end = floor_to(before, width)
            count = int(span_h * 3600 // width)
            first = end - timedelta(seconds=count * width)
            for table, values in ROLLUP_VALUES.items():
                name = rollup_name(table, res)
                per_node = PORTS if table in ("ib_port_samples", "nccl_connections") else GPUS
                cols = {
                    "ts": f"TIMESTAMP '{first.isoformat(sep=' ')}' + to_seconds(b * {width})",
                    "node": "'host' || n",
                    "job": "'train'",
                    "samples": str(width),
                    **{
                        c: v.replace("{width}", str(width))
                        .replace("{nodes}", str(nodes))
                        .replace("{first_epoch}", str(int(first.replace(tzinfo=UTC).timestamp())))
                        .replace("{before_epoch}", str(int(before.replace(tzinfo=UTC).timestamp())))
                        for c, v in values.items()
                    },
                }
                cols = {c: v for c, v in cols.items() if c in load()[name].column_names}
                names = ", ".join(f'"{c}"' for c in cols)
                exprs = ", ".join(f"{v}" for v in cols.values())
                cur.execute(
                    f'INSERT INTO "{name}" ({names}) SELECT {exprs} FROM range({count}) t(b) '
                    f"CROSS JOIN range({nodes}) h(n) CROSS JOIN range({per_node}) l(k) ORDER BY b"
                )
                rows[name] = count * nodes * per_node
        store.checkpoint()
    finally:
        store.close()
    return rows


def time_rollup(path: Path, minutes: float) -> dict:
    """Time the collector's minute rollup compute (``prepare``) over the first ``minutes`` of the raw rows of
    every rolled-up table: raw rows read per second, the figure that says whether it keeps up with ingest."""
    store = Store(path, load())
    out: dict = {"minutes": minutes, "tables": {}}
    try:
        cur = store.cursor()
        for name in ROLLUP_VALUES:
            first = cur.execute(f'SELECT min(ts) FROM "{name}"').fetchone()[0]
            if first is None:
                continue
            start = floor_to(first, 60) + timedelta(minutes=1)
            end = start + timedelta(minutes=minutes)
            step = Step(load()[name], "1m")
            rows = cur.execute(f"SELECT count(*) FROM ({raw_sql(step.spec, start, end)})").fetchone()[0]
            t0 = time.perf_counter()
            step.compute(cur, start, end, load()[step.target])
            seconds = time.perf_counter() - t0
            out["tables"][name] = {
                "raw_rows": rows,
                "seconds": round(seconds, 3),
                "rows_per_s": round(rows / seconds),
            }
        cur.close()
    finally:
        store.close()
    rows = sum(t["raw_rows"] for t in out["tables"].values())
    seconds = sum(t["seconds"] for t in out["tables"].values())
    out.update(raw_rows=rows, seconds=round(seconds, 3), rows_per_s=round(rows / max(seconds, 1e-9)))
    return out
