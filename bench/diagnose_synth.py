"""A synthetic minute of a large job (e.g. 10,000 ranks) as the tables C4D reads, for timing the analysis."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa

from c4.catalogue import load

GPUS_PER_NODE = 8
NICS_PER_NODE = 8


def _frame(table: str, columns: dict[str, np.ndarray | list]) -> pl.DataFrame:
    """A frame with the catalogue's schema: the given columns, nulls for the rest."""
    schema = load()[table].arrow_schema
    n = len(next(iter(columns.values())))
    arrays = [
        pa.array(columns[f.name], type=f.type) if f.name in columns else pa.nulls(n, type=f.type)
        for f in schema
    ]
    return pl.from_arrow(pa.Table.from_arrays(arrays, schema=schema))


def synth_window(ranks: int = 10_000, seconds: float = 60.0, period_s: float = 1.2, seed: int = 0):
    """Tables for one window with a straggling GPU and a slow NIC port; returns (tables, injected components)."""
    rng = np.random.default_rng(seed)
    nodes = max(1, ranks // GPUS_PER_NODE)
    ranks = nodes * GPUS_PER_NODE
    t0 = datetime(2027, 1, 1)
    iters = int(seconds / period_s)
    slow_node, slow_gpu, slow_nic = nodes // 3, 5, 2
    host = np.array([f"host{i}" for i in range(nodes)])

    # collectives: one record per rank per iteration; the straggler arrives 200 ms late
    rank = np.tile(np.arange(ranks), iters)
    it = np.repeat(np.arange(iters), ranks)
    start_s = it * period_s + rng.normal(0, 0.005, rank.size)
    start_s[rank == slow_node * GPUS_PER_NODE + slow_gpu] += 0.2
    start = np.datetime64(t0) + (start_s * 1e6).astype("timedelta64[us]")
    end = start + np.timedelta64(int(0.3e6), "us")
    node_of_rank = host[rank // GPUS_PER_NODE]
    colls = _frame(
        "nccl_collectives",
        {
            "ts": end,
            "node": node_of_rank,
            "job": ["train"] * rank.size,
            "comm_id": ["0x7c4c4c4c00000001"] * rank.size,
            "rank": rank,
            "n_ranks": np.full(rank.size, ranks),
            "kind": ["coll"] * rank.size,
            "coll": ["AllReduce"] * rank.size,
            "coll_sn": it,
            "exec_time_us": np.full(rank.size, 3e5),
            "start_ts": start,
            "hostname": node_of_rank,
        },
    )

    # connections: every node's NIC n sends to the next node's NIC n once per iteration (a ring per rail)
    src = np.tile(np.repeat(np.arange(nodes), NICS_PER_NODE), iters)
    nic = np.tile(np.tile(np.arange(NICS_PER_NODE), nodes), iters)
    cit = np.repeat(np.arange(iters), nodes * NICS_PER_NODE)
    dst = (src + 1) % nodes
    transfer_us = rng.normal(2.0e5, 4e3, src.size)
    touches = ((src == slow_node) | (dst == slow_node)) & (nic == slow_nic)
    transfer_us[touches] *= 2.5
    conns = _frame(
        "nccl_connections",
        {
            "ts": np.datetime64(t0) + ((cit + 1) * period_s * 1e6).astype("timedelta64[us]"),
            "node": host[src],
            "job": ["train"] * src.size,
            "comm_hash": ["0x7c4c4c4c00000001"] * src.size,
            "rank": src * GPUS_PER_NODE + nic,
            "peer_rank": dst * GPUS_PER_NODE + nic,
            "channel": nic,
            "direction": ["send"] * src.size,
            "nic_device": np.char.add("mlx5_", nic.astype(str)),
            "nic_port": np.ones(src.size, dtype=np.int32),
            "bytes": np.full(src.size, 2 << 30, dtype=np.uint64),
            "transfer_us": transfer_us,
        },
    )

    # one-second GPU and NIC samples
    secs = int(seconds)
    g_node = np.tile(np.repeat(np.arange(nodes), GPUS_PER_NODE), secs)
    g_idx = np.tile(np.tile(np.arange(GPUS_PER_NODE), nodes), secs)
    g_ts = np.datetime64(t0) + np.repeat(np.arange(secs) * 1_000_000, nodes * GPUS_PER_NODE).astype(
        "timedelta64[us]"
    )
    gpus = _frame(
        "gpu_samples",
        {
            "ts": g_ts,
            "node": host[g_node],
            "gpu_index": g_idx,
            "pci_bus_id": np.char.add("00000000:", np.char.add((g_idx + 0x18).astype(str), ":00.0")),
            "util_gpu_pct": np.full(g_node.size, 97.0),
            "temp_gpu_c": np.full(g_node.size, 62.0),
            "clock_sm_mhz": np.full(g_node.size, 1980.0),
            "clocks_event_reasons": np.zeros(g_node.size, dtype=np.uint64),
            "pcie_gen_cur": np.full(g_node.size, 5),
            "pcie_gen_max": np.full(g_node.size, 5),
            "pcie_replay_count": np.zeros(g_node.size, dtype=np.uint64),
            "ecc_dbe_volatile": np.zeros(g_node.size, dtype=np.uint64),
            "remapped_rows_failure": np.zeros(g_node.size, dtype=np.int64),
        },
    )
    tick = np.repeat(np.arange(secs), nodes * NICS_PER_NODE)
    ports = _frame(
        "ib_port_samples",
        {
            "ts": g_ts,
            "node": host[g_node],
            "device": np.char.add("mlx5_", g_idx.astype(str)),
            "port": np.ones(g_node.size, dtype=np.int32),
            "state": ["ACTIVE"] * g_node.size,
            "rate_bps": np.full(g_node.size, 400e9),
            "tx_bytes": (tick * 40e9).astype(np.uint64),
            "link_downed": np.zeros(g_node.size, dtype=np.uint64),
            "symbol_errors": np.zeros(g_node.size, dtype=np.uint64),
            "roce_adp_retrans": np.zeros(g_node.size, dtype=np.uint64),
            "np_cnp_sent": np.zeros(g_node.size, dtype=np.uint64),
        },
    )
    tables = {
        "nccl_collectives": colls.sort("ts"),  # as the window loaders return them (ORDER BY ts)
        "nccl_connections": conns,
        "gpu_samples": gpus,
        "ib_port_samples": ports,
        "gpu_events": _frame("gpu_events", {"ts": []}),
    }
    injected = {f"host{slow_node}/gpu{slow_gpu}", f"host{slow_node}/mlx5_{slow_nic}p1"}
    return tables, injected
