"""Collective detectors (C4D's periodicity and homogeneity): hangs, stragglers and slow connections.

Pure functions over polars frames of nccl_collectives, nccl_connections and gpu_samples. Every
threshold is relative to the job itself (medians, MADs, the learned iteration period), not tuned
to one scenario.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from c4.analytics.fabric import FabricModel, cable_of
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


def straggler_findings(colls: pl.DataFrame, min_seqs: int = 5) -> list[Finding]:
    """The same rank enters the last `min_seqs` collectives last, clearly later than the others: a straggler.

    Blips shorter than `min_seqs` iterations and slowdowns shared by every rank raise nothing.
    """
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
    spread = per_seq["late_s"].abs().median() or 0.0
    top = pl.col("late_s").arg_max()
    last = (
        per_seq.group_by(["comm_id", "coll_sn"])
        .agg(
            pl.col("rank").get(top),
            pl.col("hostname").get(top),
            pl.col("late_s").max(),
            pl.col("start_ts").min().alias("seq_ts"),
            pl.col("ts").max(),
        )
        .sort("seq_ts")
    )
    out = []
    for (comm,), g in last.group_by(["comm_id"], maintain_order=True):
        ranks, lates = g["rank"].to_list(), g["late_s"].to_list()
        threshold = max(10 * spread, 0.02)
        run = 0
        for r, late in zip(reversed(ranks), reversed(lates), strict=True):  # trailing run of one late rank
            if r != ranks[-1] or late <= threshold:
                break
            run += 1
        if run < min_seqs:
            continue
        tail = g.tail(run)
        rank, node = int(ranks[-1]), tail["hostname"][0]
        comp = f"{node}/gpu{rank % 8}"
        late = float(tail["late_s"].median())
        out.append(
            Finding(
                "straggler",
                "non_comm_slow",
                "gpu",
                comp,
                node,
                tail["ts"].min(),
                tail["ts"].max(),
                min(0.95, 0.5 + 0.05 * run),
                "drain_node",
                f"rank {rank} ({comp}) entered the last {run} collectives last, "
                f"{late * 1e3:.0f} ms after the median rank",
                {"collectives_last": run, "late_s": late, "typical_spread_s": spread, "comm": comm},
                f"SELECT ts, rank, coll_sn, start_ts FROM nccl_collectives WHERE comm_id = '{comm}' ORDER BY coll_sn, rank",
            )
        )
    return out


def _slow_connections(
    conns: pl.DataFrame, host_of: pl.DataFrame | None, factor: float, min_windows: int
) -> pl.DataFrame:
    """Connections below `factor` of their communicator's median throughput in each of their last `min_windows` windows."""
    c = conns.filter((pl.col("bytes") > 0) & (pl.col("transfer_us") > 0) & (pl.col("direction") == "send"))
    if c.is_empty():
        return c
    c = c.with_columns((pl.col("bytes") * 8 / (pl.col("transfer_us") * 1e3)).alias("gbps"))
    c = c.with_columns((pl.col("gbps") / pl.col("gbps").median().over(["ts", "comm_hash"])).alias("ratio"))
    ok_ts = pl.col("ts").filter(pl.col("ratio") >= factor).max()
    per = c.group_by(["node", "nic_device", "comm_hash", "peer_rank", "channel"]).agg(
        pl.when(ok_ts.is_null()).then(pl.len()).otherwise((pl.col("ts") > ok_ts).sum()).alias("trailing"),
        pl.col("ratio")
        .filter(pl.col("ts") > ok_ts.fill_null(pl.datetime(1970, 1, 1)))
        .median()
        .alias("ratio"),
        pl.col("ts").filter(pl.col("ts") > ok_ts.fill_null(pl.datetime(1970, 1, 1))).min().alias("first"),
        pl.col("ts").max().alias("last"),
    )
    slow = per.filter(pl.col("trailing") >= min_windows)
    if host_of is not None and not host_of.is_empty():
        slow = slow.join(
            host_of, left_on=["comm_hash", "peer_rank"], right_on=["comm_id", "rank"], how="left"
        )
    else:
        slow = slow.with_columns(pl.lit(None, dtype=pl.String).alias("hostname"))
    return slow.with_columns(pl.coalesce("hostname", pl.format("rank{}", "peer_rank")).alias("peer_node"))


def slow_connection_findings(
    conns: pl.DataFrame,
    colls: pl.DataFrame | None = None,
    factor: float = 0.7,
    min_windows: int = 3,
    fabric: FabricModel | None = None,
    period_s: float | None = None,
) -> list[Finding]:
    """Connections whose wire throughput stays well below their peers'; blame what they share.

    Each slow connection has two ends (its sender's row and its receiver's column in the connection
    matrix). Candidates are those ports and, with a fabric model, the switch cables the connections
    cross. A candidate explains its slow connections when (nearly) every connection it carries is slow;
    a cable must also carry less than its nominal rate (degraded), since a full cable is congestion from
    colliding flows, not a fault. The candidate explaining the most slow connections is blamed first. A
    single unexplained slow connection blames the path between its two ends.
    """
    if conns.is_empty():
        return []
    if period_s:  # a trailing run of min_windows slow windows is all that counts: look at the recent ones
        recent = conns["ts"].max() - timedelta(seconds=(min_windows + 2) * period_s * 1.5)
        conns = conns.filter(pl.col("ts") >= recent)
    host_of = None
    if colls is not None and not colls.is_empty():
        host_of = colls.select(["comm_id", "rank", "hostname"]).unique(["comm_id", "rank"])
    slow = _slow_connections(conns, host_of, factor, min_windows)
    if slow.is_empty():
        return []
    suspects = list(set(slow["node"].to_list()) | set(slow["peer_node"].to_list()))
    live = conns.filter((pl.col("bytes") > 0) & (pl.col("direction") == "send"))
    if fabric is None and host_of is not None:  # only the suspects' ports need their connections counted
        theirs = host_of.filter(pl.col("hostname").is_in(suspects))["rank"].unique()
        live = live.filter(pl.col("node").is_in(suspects) | pl.col("peer_rank").is_in(theirs.implode()))
    # each send record's receiving host, once (None where the communicator's ranks are not known)
    if host_of is not None:
        live = live.join(
            host_of, left_on=["comm_hash", "peer_rank"], right_on=["comm_id", "rank"], how="left"
        )
    else:
        live = live.with_columns(pl.lit(None, dtype=pl.String).alias("hostname"))
    ports: dict[str, tuple[str, str]] = {}  # "node/devp1" -> (node, device)
    carried: dict[str, int] = {}  # port -> connections it sends (node) or receives (hostname) on
    sends = live.unique(["node", "nic_device", "comm_hash", "peer_rank", "channel"])
    for end in ("node", "hostname"):
        for node, dev, n in sends.drop_nulls(end).group_by([end, "nic_device"]).len().iter_rows():
            port = f"{node}/{dev}p1"
            ports[port] = (node, dev)
            carried[port] = carried.get(port, 0) + n
    rows = slow.to_dicts()
    # candidate culprits: ports (a row or column of the matrix) and, with a fabric model, switch cables
    members: dict[tuple[str, str], set[int]] = {}
    for i, r in enumerate(rows):
        for node in {r["node"], r["peer_node"]}:
            port = f"{node}/{r['nic_device']}p1"
            ports.setdefault(port, (node, r["nic_device"]))
            members.setdefault(("port", port), set()).add(i)
        if fabric is not None:
            for cable in fabric.cables(r["node"], r["peer_node"], r["channel"]):
                members.setdefault(("link", cable), set()).add(i)
    crossing: dict[str, int] = {}  # cable -> live connections crossing it
    utilization: dict[str, float] = {}  # cable -> the busier direction's carried rate / nominal rate
    if fabric is not None and host_of is not None:
        latest = (
            live.drop_nulls("hostname")
            .filter(pl.col("transfer_us") > 0)
            .group_by(["node", "hostname", "channel"])
            .agg((pl.col("bytes") * 8 / (pl.col("transfer_us") * 1e3)).last().alias("gbps"))
        )
        carried_gbps: dict[str, float] = {}
        for node, dst, ch, gbps in latest.iter_rows():
            for d in fabric.paths.get((node, dst, ch), ()):
                carried_gbps[d] = carried_gbps.get(d, 0.0) + gbps
            for cable in fabric.cables(node, dst, ch):
                crossing[cable] = crossing.get(cable, 0) + 1
        for d, gbps in carried_gbps.items():
            cable = cable_of(d)
            cap = fabric.capacity_gbps.get(d)
            if cap:
                utilization[cable] = max(utilization.get(cable, 0.0), gbps / cap)

    def explains(cand: tuple[str, str]) -> bool:
        """A component explains its slow connections when (nearly) every connection it carries is slow."""
        kind, name = cand
        n = len(members[cand])
        if kind == "port":
            return n >= 2 and n >= carried.get(name, 0)
        return n >= 2 and n >= 0.8 * crossing.get(name, n) and utilization.get(name, 0.0) < factor

    unexplained = set(range(len(rows)))
    out = []
    while unexplained:  # greedy cover: the component that explains the most slow connections first
        best = max(
            (c for c in members if explains(c)),
            key=lambda c: (len(members[c] & unexplained), c[0] == "port", c[1]),
            default=None,
        )
        if best is None or len(members[best] & unexplained) < 2:
            break
        mine = sorted(members[best] & unexplained)
        unexplained -= set(mine)
        ratio = float(pl.Series([rows[i]["ratio"] for i in mine]).median())
        first = min(rows[i]["first"] for i in mine)
        last = max(rows[i]["last"] for i in mine)
        kind, comp = best
        if kind == "port":
            node, dev = ports[comp]
            out.append(
                Finding(
                    "slow_connection",
                    "comm_slow",
                    "nic_port",
                    comp,
                    node,
                    first,
                    last,
                    0.85,
                    "replace_cable",
                    f"every connection of {comp} ({len(mine)}) is slow: {ratio:.0%} of its peers' throughput",
                    {"slow_connections": len(mine), "throughput_ratio": ratio},
                    f"SELECT ts, node, peer_rank, channel, bytes, transfer_us FROM nccl_connections WHERE "
                    f"node = '{node}' AND nic_device = '{dev}' ORDER BY ts",
                )
            )
        else:
            out.append(
                Finding(
                    "slow_switch_link",
                    "comm_slow",
                    "switch_link",
                    comp,
                    rows[mine[0]]["node"],
                    first,
                    last,
                    0.8,
                    "replace_cable",
                    f"{len(mine)} slow connections from different ports all cross {comp}, and every "
                    f"connection crossing it is slow: {ratio:.0%} of their peers' throughput",
                    {
                        "slow_connections": len(mine),
                        "crossing": crossing.get(comp),
                        "throughput_ratio": ratio,
                    },
                )
            )
    rest = [rows[i] for i in sorted(unexplained)]
    if len(rest) == 1 and not out:
        r = rest[0]
        comp = f"{r['node']}/{r['nic_device']}p1<->{r['peer_node']}/{r['nic_device']}p1"
        out.append(
            Finding(
                "slow_path",
                "comm_slow",
                "link",
                comp,
                r["node"],
                r["first"],
                r["last"],
                0.6,
                "replace_cable",
                f"the connection {comp} alone is slow: the path between them",
                {"throughput_ratio": r["ratio"]},
            )
        )
    return out
