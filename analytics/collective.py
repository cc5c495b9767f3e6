"""Collective detectors (C4D's periodicity and homogeneity): hangs, stragglers and slow connections.

Pure functions over polars frames of nccl_collectives, nccl_connections and gpu_samples. Every
threshold is relative to the job itself (medians, MADs, the learned iteration period), not tuned
to one scenario.
"""

from __future__ import annotations

import polars as pl

from c4.analytics.findings import Finding


def iteration_period_s(colls: pl.DataFrame) -> float | None:
    """Median time between consecutive collectives of one rank (the job's period, learned from the data)."""
    if colls.is_empty() or colls.height < 4:
        return None
    one = colls.filter(pl.col("rank") == colls["rank"].min()).sort("ts")
    gaps = one["ts"].diff().dt.total_microseconds().drop_nulls() / 1e6
    gaps = gaps.filter(gaps > 0)
    return float(gaps.median()) if len(gaps) else None


def hang_findings(colls: pl.DataFrame, gpus: pl.DataFrame, now, stall_periods: float = 5.0) -> list[Finding]:
    """No collective has completed for `stall_periods` iteration periods: a hang; localize by GPU activity."""
    period = iteration_period_s(colls)
    if period is None:
        return []
    last = colls["ts"].max()
    stalled_s = (now - last).total_seconds()
    if stalled_s < stall_periods * period:
        return []
    seq = int(colls.filter(pl.col("ts") == last)["coll_sn"][0])
    out = []
    if not gpus.is_empty():
        recent = gpus.filter(pl.col("ts") > last)
        if not recent.is_empty():
            latest = recent.sort("ts").group_by(["node", "gpu_index"], maintain_order=True).last()
            spinning = latest.filter(pl.col("util_gpu_pct") >= 50)
            idle = latest.filter(pl.col("util_gpu_pct") < 5)
            # everyone else spins in NCCL kernels waiting for the collective; the rank that never issued it idles
            if spinning.height >= 2 and 0 < idle.height <= max(1, latest.height // 8):
                for r in idle.iter_rows(named=True):
                    comp = f"{r['node']}/gpu{r['gpu_index']}"
                    out.append(
                        Finding(
                            "hang_non_comm",
                            "non_comm_hang",
                            "gpu",
                            comp,
                            r["node"],
                            last,
                            now,
                            0.85,
                            "restart_job",
                            f"job hung after collective #{seq}: {comp} never issued the next "
                            f"one while {spinning.height} GPUs wait in NCCL",
                            {"last_seq": seq, "stalled_s": stalled_s, "period_s": period},
                        )
                    )
    return out


def comm_hang_findings(conns: pl.DataFrame, period_s: float | None) -> list[Finding]:
    """All ranks inside a collective, one connection moving nothing while its peers wait: blame that connection."""
    if conns.is_empty():
        return []
    latest_ts = conns["ts"].max()
    window = conns.filter(pl.col("ts") == latest_ts)
    dead = window.filter((pl.col("bytes") == 0) & (pl.col("direction") == "send"))
    live = window.filter(pl.col("bytes") > 0)
    if dead.is_empty() or live.is_empty() or dead.height > window.height // 4:
        return []
    out = []
    for (node, dev), g in dead.group_by(["node", "nic_device"], maintain_order=True):
        comp = f"{node}/{dev}p1"
        out.append(
            Finding(
                "hang_comm",
                "comm_hang",
                "nic_port",
                comp,
                node,
                latest_ts,
                latest_ts,
                0.8,
                "restart_job",
                f"connections from {comp} make no progress while every rank waits",
                {"stalled_connections": g.height, "peers_waiting": live.height},
            )
        )
    return out


def straggler_findings(colls: pl.DataFrame, min_share: float = 0.8, min_seqs: int = 5) -> list[Finding]:
    """The same rank enters the collective last, consistently and clearly: a non-communication straggler."""
    c = colls.filter(pl.col("kind") == "coll").drop_nulls("start_ts")
    if c.is_empty():
        return []
    per_seq = c.with_columns(
        (
            (
                pl.col("start_ts") - pl.col("start_ts").median().over(["comm_id", "coll_sn"])
            ).dt.total_microseconds()
            / 1e6
        ).alias("late_s")
    )
    last = per_seq.filter(pl.col("late_s") == pl.col("late_s").max().over(["comm_id", "coll_sn"]))
    seqs = per_seq.select(["comm_id", "coll_sn"]).unique().height
    if seqs < min_seqs:
        return []
    spread = per_seq["late_s"].abs().median() or 0.0
    out = []
    for (comm, rank), g in last.group_by(["comm_id", "rank"], maintain_order=True):
        share = g.height / seqs
        late = float(g["late_s"].median())
        if share >= min_share and late > max(10 * spread, 0.02):
            node = g["hostname"][0]
            gpu = int(rank) % 8
            comp = f"{node}/gpu{gpu}"
            out.append(
                Finding(
                    "straggler",
                    "non_comm_slow",
                    "gpu",
                    comp,
                    node,
                    g["ts"].min(),
                    g["ts"].max(),
                    min(0.95, share),
                    "drain_node",
                    f"rank {rank} ({comp}) enters the collective last in {share:.0%} of {seqs} collectives, "
                    f"{late * 1e3:.0f} ms after the median rank",
                    {"share_last": share, "late_s": late, "typical_spread_s": spread, "comm": comm},
                )
            )
    return out


def slow_connection_findings(
    conns: pl.DataFrame, colls: pl.DataFrame | None = None, factor: float = 0.7, min_windows: int = 3
) -> list[Finding]:
    """Connections whose wire throughput stays well below their peers'; blame the NIC port they share.

    Each slow connection has two ends (its sender's row and its receiver's column in the connection
    matrix). The port that appears in every slow connection is the culprit; a single slow connection
    blames the path between its two ends.
    """
    c = conns.filter((pl.col("bytes") > 0) & (pl.col("transfer_us") > 0))
    if c.is_empty():
        return []
    c = c.with_columns((pl.col("bytes") * 8 / (pl.col("transfer_us") * 1e3)).alias("gbps"))
    med = c.group_by("ts").agg(pl.col("gbps").median().alias("med"))
    c = c.join(med, on="ts").with_columns((pl.col("gbps") / pl.col("med")).alias("ratio"))
    windows = c["ts"].n_unique()
    host_of: dict[tuple[str, int], str] = {}
    if colls is not None and not colls.is_empty():
        for comm, rank, host in colls.select(["comm_id", "rank", "hostname"]).unique().iter_rows():
            host_of[(comm, rank)] = host
    slow_conns = []
    for (node, dev, comm, peer), g in c.group_by(
        ["node", "nic_device", "comm_hash", "peer_rank"], maintain_order=True
    ):
        slow = g.filter(pl.col("ratio") < factor)
        if slow["ts"].n_unique() >= max(min_windows, windows // 3):
            slow_conns.append(((node, dev), (host_of.get((comm, peer), f"rank{peer}"), dev), slow))
    if not slow_conns:
        return []
    count: dict[tuple[str, str], int] = {}
    for src, dst, _ in slow_conns:
        for end in {src, dst}:
            count[end] = count.get(end, 0) + 1
    top = max(count.values())
    out = []
    if top >= 2:
        for (node, dev), n in count.items():
            if n < top:
                continue
            mine = [s for a, b, s in slow_conns if (node, dev) in (a, b)]
            ratio = float(pl.concat([m["ratio"] for m in mine]).median())
            comp = f"{node}/{dev}p1"
            out.append(
                Finding(
                    "slow_connection",
                    "comm_slow",
                    "nic_port",
                    comp,
                    node,
                    min(m["ts"].min() for m in mine),
                    max(m["ts"].max() for m in mine),
                    0.85,
                    "replace_cable",
                    f"every slow connection ({n}) runs through {comp}: {ratio:.0%} of its peers' throughput",
                    {"slow_connections": n, "throughput_ratio": ratio},
                    f"SELECT ts, node, peer_rank, channel, bytes, transfer_us FROM nccl_connections WHERE "
                    f"nic_device = '{dev}' ORDER BY ts",
                )
            )
    else:
        (a, b, slow) = slow_conns[0]
        comp = f"{a[0]}/{a[1]}p1<->{b[0]}/{b[1]}p1"
        out.append(
            Finding(
                "slow_path",
                "comm_slow",
                "link",
                comp,
                a[0],
                slow["ts"].min(),
                slow["ts"].max(),
                0.6,
                "replace_cable",
                f"the connection {comp} alone is slow: the path between them",
                {"throughput_ratio": float(slow["ratio"].median())},
            )
        )
    return out
