"""Collective detectors (C4D's periodicity and homogeneity): hangs, stragglers and slow connections.

Pure functions over polars frames of nccl_collectives, nccl_connections and gpu_samples. Every
threshold is relative to the job itself (medians, MADs, the learned iteration period), not tuned
to one scenario.
"""

from __future__ import annotations

import math
from datetime import timedelta

import polars as pl

from c4.analytics.fabric import FabricModel, cable_of
from c4.analytics.findings import Finding
from c4.analytics.hang import hang_findings
from c4.analytics.jobs import with_job
from c4.analytics.onset import trailing_onsets
from c4.analytics.p2p_links import slow_link_findings
from c4.analytics.periods import iteration_period_s
from c4.analytics.rank_gpu import RankPlaces
from c4.analytics.victims import without_victims

__all__ = [
    "comm_hang_findings",
    "hang_findings",
    "iteration_period_s",
    "slow_connection_findings",
    "straggler_findings",
]


def comm_hang_findings(conns: pl.DataFrame, period_s: float | None) -> list[Finding]:
    """All ranks inside a collective, one connection moving nothing while its peers wait: blame that connection."""
    if conns.is_empty():
        return []
    conns = with_job(conns)
    latest_ts = conns["ts"].max()
    window = conns.filter(pl.col("ts") == latest_ts)
    dead = window.filter((pl.col("bytes") == 0) & (pl.col("direction") == "send"))
    live = window.filter(pl.col("bytes") > 0)
    if dead.is_empty() or live.is_empty() or dead.height > window.height // 4:
        return []
    # each port's stall began after the last sample in which one of its now-dead connections moved data
    keys = ["node", "nic_device", "comm_hash", "peer_rank", "channel"]
    stalled = conns.filter(pl.col("direction") == "send").join(dead.select(keys).unique(), on=keys)
    since = trailing_onsets(stalled, ["node", "nic_device"], pl.col("bytes") == 0)
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
                since.get((node, dev), latest_ts),
                latest_ts,
                0.8,
                "restart_job",
                f"connections from {comp} make no progress while every rank waits",
                {"stalled_connections": g.height, "peers_waiting": live.height},
                **_whose(g.to_dicts()),
            )
        )
    return out


def _behind(colls: pl.DataFrame) -> pl.DataFrame:
    """Per rank and collective: how far behind its communicator's median rank it arrived (``behind_s``).

    With start times (NCCL_INSPECTOR_DUMP_VERBOSE=1) that is its start minus the median start. NCCL's
    default output has none, but a collective ends for every rank when the last one arrives, so a rank
    that arrives late waits least: its arrival delay is the median execution time minus its own. A
    restarted job reuses sequence numbers: only each rank's newest record of a number counts.
    """
    c = with_job(colls).filter(pl.col("kind") == "coll")
    if "start_ts" not in c.columns:
        c = c.with_columns(pl.lit(None, dtype=pl.Datetime("us")).alias("start_ts"))
    if "exec_time_us" not in c.columns:
        c = c.with_columns(pl.lit(None, dtype=pl.Float64).alias("exec_time_us"))
    c = c.sort("ts").unique(["job", "comm_id", "coll_sn", "rank"], keep="last", maintain_order=True)
    seq = ["job", "comm_id", "coll_sn"]
    timed = (pl.col("start_ts").null_count().over(seq) == 0) & (pl.len().over(seq) >= 2)
    late_start = (pl.col("start_ts") - pl.col("start_ts").median().over(seq)).dt.total_microseconds() / 1e6
    waited_less = (pl.col("exec_time_us").median().over(seq) - pl.col("exec_time_us")) / 1e6
    exec_ok = (pl.col("exec_time_us").null_count().over(seq) == 0) & (pl.len().over(seq) >= 2)
    return c.with_columns(
        pl.when(timed).then(late_start).when(exec_ok).then(waited_less).alias("behind_s"),
        pl.when(timed).then(pl.lit("start_ts")).otherwise(pl.lit("exec_time_us")).alias("signal"),
    ).drop_nulls("behind_s")


def _trailing_share(hits: list[bool], min_seqs: int, min_fraction: float) -> int:
    """Length of the longest trailing stretch in which at least ``min_fraction`` are hits (0 if too short).

    The newest ``min_seqs`` must themselves pass, so a straggler that recovered stops being reported.
    """
    tail = hits[-min_seqs:]
    if len(tail) < min_seqs or sum(tail) < min_fraction * min_seqs:
        return 0
    best, count = 0, 0
    for n, hit in enumerate(reversed(hits), start=1):
        count += hit
        if n >= min_seqs and count >= min_fraction * n:
            best = n
    return best


def _waits_towards(conns: pl.DataFrame | None, comm: str, rank: int) -> dict:
    """Per-connection evidence: how long senders to ``rank`` waited for it, against senders to its peers."""
    if conns is None or conns.is_empty() or "wait_peer_us" not in conns.columns:
        return {}
    sends = conns.filter(
        (pl.col("comm_hash") == comm) & (pl.col("direction") == "send") & (pl.col("ops") > 0)
    ).drop_nulls("wait_peer_us")
    if sends.is_empty():
        return {}
    to_it = sends.filter(pl.col("peer_rank") == rank)["wait_peer_us"].median()
    others = sends.filter(pl.col("peer_rank") != rank)["wait_peer_us"].median()
    if to_it is None or others is None:
        return {}
    return {"peer_wait_us_towards": float(to_it), "peer_wait_us_others": float(others)}


def straggler_findings(
    colls: pl.DataFrame,
    min_seqs: int = 5,
    places: RankPlaces | None = None,
    conns: pl.DataFrame | None = None,
    min_fraction: float = 0.8,
    links: list[Finding] | None = None,
) -> list[Finding]:
    """Per communicator, the same rank arrives last in (nearly) every recent collective, clearly later
    than its peers: a straggler.

    Arrival comes from start times where NCCL Inspector wrote them (verbose), else from execution
    times (its default output: the last to arrive waits least). A rank is blamed when it was the
    latest, by more than ten times the communicator's typical spread, in at least ``min_fraction``
    of a trailing stretch of at least ``min_seqs`` collectives. Blips shorter than that, slowdowns
    shared by every rank and changing latecomers raise nothing. Senders' waits on the straggler
    (nccl_connections ``wait_peer_us``) are added as evidence where known. The straggler's GPU comes
    from ``places`` (the rank_identity view), never from its rank number alone.

    Detection runs per (job, communicator); a GPU late in several communicators is one finding, and
    ranks late only because they waited on a slow worker of their pipeline are listed in the cause's
    ``affected``, never blamed (analytics/victims.py); so are the ranks a slow pipeline link delays
    (``links``: analytics/p2p_links.slow_link_findings of the window, found here when None).
    """
    places = places or RankPlaces()
    b = _behind(colls)
    if b.is_empty():
        return []
    spreads = b.group_by(["job", "comm_id"]).agg(pl.col("behind_s").abs().median().alias("spread"))
    top = pl.col("behind_s").arg_max()
    last = (
        b.group_by(["job", "comm_id", "coll_sn"])
        .agg(
            pl.col("rank").get(top),
            pl.col("hostname").get(top),
            pl.col("behind_s").max(),
            pl.col("signal").first(),
            pl.col("ts").max(),
        )
        .join(spreads, on=["job", "comm_id"])
        .sort(["ts", "coll_sn"])
    )
    out = []
    for (job, comm), g in last.group_by(["job", "comm_id"], maintain_order=True):
        spread = float(g["spread"][0] or 0.0)
        threshold = max(10 * spread, 0.02)
        ranks, behind = g["rank"].to_list(), g["behind_s"].to_list()
        recent = [r for r, x in zip(ranks[-min_seqs:], behind[-min_seqs:], strict=True) if x > threshold]
        if not recent:
            continue
        rank = max(set(recent), key=recent.count)
        hits = [r == rank and x > threshold for r, x in zip(ranks, behind, strict=True)]
        run = _trailing_share(hits, min_seqs, min_fraction)
        if run == 0:
            continue
        tail = g.tail(run).filter(pl.col("rank") == rank)
        where = places.of(comm, rank, tail["hostname"][0])
        comp, node = (where.component, where.node) if where else (f"rank{rank}", "")
        late = float(tail["behind_s"].median())
        signals = sorted(set(tail["signal"].to_list()))
        how = "entered" if signals == ["start_ts"] else "arrived at (waited least in)"
        out.append(
            Finding(
                "straggler",
                "non_comm_slow",
                "gpu",
                comp,
                node,
                tail["ts"].min(),
                tail["ts"].max(),
                min(0.95, 0.5 + 0.05 * tail.height),
                "drain_node",
                f"rank {rank} ({comp}) {how} {tail.height} of the last {run} collectives last, "
                f"{late * 1e3:.0f} ms after the median rank",
                {
                    "collectives_last": tail.height,
                    "collectives_window": run,
                    "late_s": late,
                    "typical_spread_s": spread,
                    "signal": ",".join(signals),
                    "comm": comm,
                    "rank": rank,
                    **_waits_towards(conns, comm, rank),
                    **(where.evidence if where else {"gpu_from": "unknown: no host or identity"}),
                },
                f"SELECT ts, rank, coll_sn, start_ts, exec_time_us FROM nccl_collectives "
                f"WHERE comm_id = '{comm}' ORDER BY coll_sn, rank",
                job=job,
                communicator=comm,
            )
        )
    if links is None and out:
        links = slow_link_findings(colls, places)
    return without_victims(out, colls, places, links)


#: A candidate culprit: ("port", "host3/mlx5_2p1") or ("link", "leaf0<->spine1").
_Candidate = tuple[str, str]


def _port(node: str, device: str) -> str:
    """A NIC device's port as faults name it: "host3/mlx5_2p1"."""
    return f"{node}/{device}p1"


def _recent(conns: pl.DataFrame, period_s: float | None, min_windows: int) -> pl.DataFrame:
    """The windows a trailing run of ``min_windows`` slow ones can lie in (all when the period is unknown)."""
    if not period_s:
        return conns
    recent = conns["ts"].max() - timedelta(seconds=(min_windows + 2) * period_s * 1.5)
    return conns.filter(pl.col("ts") >= recent)


def _rank_hosts(colls: pl.DataFrame | None) -> pl.DataFrame | None:
    """Each rank's host per communicator (comm_id, rank, hostname), once; None without collectives."""
    if colls is None or colls.is_empty():
        return None
    return colls.select(["comm_id", "rank", "hostname"]).unique(["comm_id", "rank"])


def _with_receiver(sends: pl.DataFrame, host_of: pl.DataFrame | None) -> pl.DataFrame:
    """``sends`` with a ``hostname`` column: the receiving rank's host (null where it is not known)."""
    if host_of is None:
        return sends.with_columns(pl.lit(None, dtype=pl.String).alias("hostname"))
    return sends.join(host_of, left_on=["comm_hash", "peer_rank"], right_on=["comm_id", "rank"], how="left")


def _slow_connections(
    conns: pl.DataFrame, host_of: pl.DataFrame | None, factor: float, min_windows: int
) -> pl.DataFrame:
    """Connections below `factor` of their communicator's median throughput in each of their last `min_windows` windows."""
    c = conns.filter((pl.col("bytes") > 0) & (pl.col("transfer_us") > 0) & (pl.col("direction") == "send"))
    if c.is_empty():
        return c
    c = c.with_columns((pl.col("bytes") * 8 / (pl.col("transfer_us") * 1e3)).alias("gbps"))
    c = c.with_columns(
        (pl.col("gbps") / pl.col("gbps").median().over(["ts", "job", "comm_hash"])).alias("ratio")
    )
    ok_ts = pl.col("ts").filter(pl.col("ratio") >= factor).max()
    per = c.group_by(["node", "nic_device", "comm_hash", "peer_rank", "channel"]).agg(
        pl.when(ok_ts.is_null()).then(pl.len()).otherwise((pl.col("ts") > ok_ts).sum()).alias("trailing"),
        pl.col("ratio")
        .filter(pl.col("ts") > ok_ts.fill_null(pl.datetime(1970, 1, 1)))
        .median()
        .alias("ratio"),
        pl.col("ts").filter(pl.col("ts") > ok_ts.fill_null(pl.datetime(1970, 1, 1))).min().alias("first"),
        pl.col("ts").max().alias("last"),
        pl.col("job").last(),
    )
    slow = per.filter(pl.col("trailing") >= min_windows)
    if host_of is not None and not host_of.is_empty():
        slow = slow.join(
            host_of, left_on=["comm_hash", "peer_rank"], right_on=["comm_id", "rank"], how="left"
        )
    else:
        slow = slow.with_columns(pl.lit(None, dtype=pl.String).alias("hostname"))
    return slow.with_columns(pl.coalesce("hostname", pl.format("rank{}", "peer_rank")).alias("peer_node"))


def _live_sends(
    conns: pl.DataFrame,
    host_of: pl.DataFrame | None,
    slow: pl.DataFrame,
    fabric: FabricModel | None,
) -> pl.DataFrame:
    """The send records that moved data, each with its receiving host (``hostname``).

    Without a fabric model only the ports of the slow connections' hosts are weighed, so only the
    records touching those hosts are kept.
    """
    live = conns.filter((pl.col("bytes") > 0) & (pl.col("direction") == "send"))
    if fabric is None and host_of is not None:
        suspects = list(set(slow["node"].to_list()) | set(slow["peer_node"].to_list()))
        theirs = host_of.filter(pl.col("hostname").is_in(suspects))["rank"].unique()
        live = live.filter(pl.col("node").is_in(suspects) | pl.col("peer_rank").is_in(theirs.implode()))
    return _with_receiver(live, host_of)


def _connections_per_port(live: pl.DataFrame) -> tuple[dict[str, tuple[str, str]], dict[str, int]]:
    """Per port, its (node, device) and how many connections it sends (node) or receives (hostname) on."""
    ports: dict[str, tuple[str, str]] = {}
    carried: dict[str, int] = {}
    sends = live.unique(["node", "nic_device", "comm_hash", "peer_rank", "channel"])
    for end in ("node", "hostname"):
        for node, dev, n in sends.drop_nulls(end).group_by([end, "nic_device"]).len().iter_rows():
            port = _port(node, dev)
            ports[port] = (node, dev)
            carried[port] = carried.get(port, 0) + n
    return ports, carried


def _candidates(
    rows: list[dict], fabric: FabricModel | None
) -> tuple[dict[_Candidate, set[int]], dict[str, tuple[str, str]]]:
    """Each candidate culprit and the slow connections (indices of ``rows``) it carries: the ports at
    both ends of each (a row or column of the connection matrix) and, with a fabric model, the switch
    cables it crosses. Also the (node, device) of every port named."""
    members: dict[_Candidate, set[int]] = {}
    ports: dict[str, tuple[str, str]] = {}
    for i, r in enumerate(rows):
        for node in {r["node"], r["peer_node"]}:
            port = _port(node, r["nic_device"])
            ports.setdefault(port, (node, r["nic_device"]))
            members.setdefault(("port", port), set()).add(i)
        if fabric is not None:
            for cable in fabric.cables(r["node"], r["peer_node"], r["channel"]):
                members.setdefault(("link", cable), set()).add(i)
    return members, ports


def _cable_loads(live: pl.DataFrame, fabric: FabricModel) -> tuple[dict[str, int], dict[str, float]]:
    """Per cable, the live connections crossing it, and its busier direction's carried rate over its
    nominal rate (only for directions whose rate is known)."""
    latest = (
        live.drop_nulls("hostname")
        .filter(pl.col("transfer_us") > 0)
        .group_by(["node", "hostname", "channel"])
        .agg((pl.col("bytes") * 8 / (pl.col("transfer_us") * 1e3)).last().alias("gbps"))
    )
    crossing: dict[str, int] = {}
    carried_gbps: dict[str, float] = {}
    for node, dst, ch, gbps in latest.iter_rows():
        for d in fabric.paths.get((node, dst, ch), ()):
            carried_gbps[d] = carried_gbps.get(d, 0.0) + gbps
        for cable in fabric.cables(node, dst, ch):
            crossing[cable] = crossing.get(cable, 0) + 1
    utilization: dict[str, float] = {}
    for d, gbps in carried_gbps.items():
        cable = cable_of(d)
        cap = fabric.capacity_gbps.get(d)
        if cap:
            utilization[cable] = max(utilization.get(cable, 0.0), gbps / cap)
    return crossing, utilization


def _explains(
    candidate: _Candidate,
    slow_count: int,
    carried: dict[str, int],
    crossing: dict[str, int],
    utilization: dict[str, float],
    factor: float,
) -> bool:
    """A candidate explains its ``slow_count`` slow connections when (nearly) every connection it
    carries is slow; a cable must also carry less than ``factor`` of its nominal rate (a full one is
    congestion, not a fault)."""
    kind, name = candidate
    if kind == "port":
        return slow_count >= 2 and slow_count >= carried.get(name, 0)
    return (
        slow_count >= 2
        and slow_count >= 0.8 * crossing.get(name, slow_count)
        and utilization.get(name, 0.0) < factor
    )


def _greedy_cover(
    members: dict[_Candidate, set[int]], explaining: list[_Candidate], count: int
) -> tuple[list[tuple[_Candidate, list[int]]], set[int]]:
    """Blame first the candidate that explains the most still unexplained slow connections (at least
    two); returns each blamed candidate with the connections it took, and those left unexplained."""
    unexplained = set(range(count))
    blamed = []
    while unexplained:
        best = max(
            explaining,
            key=lambda c: (len(members[c] & unexplained), c[0] == "port", c[1]),
            default=None,
        )
        if best is None or len(members[best] & unexplained) < 2:
            break
        mine = sorted(members[best] & unexplained)
        unexplained -= set(mine)
        blamed.append((best, mine))
    return blamed, unexplained


def _explained_since(mine: list[dict], needed: int):
    """When a candidate began to explain its slow connections: the first moment ``needed`` of them were
    slow at once (the ``needed``-th earliest start of their slow runs). A connection slow since before
    the fault (a colliding flow) does not date it."""
    starts = sorted(r["first"] for r in mine if r["first"] is not None)
    return starts[min(max(needed, 1), len(starts)) - 1] if starts else None


def _whose(mine: list[dict]) -> dict[str, str]:
    """The job (when the slow connections belong to one) and the communicators a connection finding rests on."""
    jobs = sorted({r.get("job") or "" for r in mine})
    comms = sorted({str(r["comm_hash"]) for r in mine if r.get("comm_hash") is not None})
    return {"job": jobs[0] if len(jobs) == 1 else "", "communicator": ",".join(comms)}


def _port_finding(port: str, node: str, device: str, mine: list[dict]) -> Finding:
    """Every connection of one NIC port is slow."""
    ratio = float(pl.Series([r["ratio"] for r in mine]).median())
    return Finding(
        "slow_connection",
        "comm_slow",
        "nic_port",
        port,
        node,
        _explained_since(mine, len(mine)),  # every connection of the port slow
        max(r["last"] for r in mine),
        0.85,
        "replace_cable",
        f"every connection of {port} ({len(mine)}) is slow: {ratio:.0%} of its peers' throughput",
        {"slow_connections": len(mine), "throughput_ratio": ratio},
        f"SELECT ts, node, peer_rank, channel, bytes, transfer_us FROM nccl_connections WHERE "
        f"node = '{node}' AND nic_device = '{device}' ORDER BY ts",
        **_whose(mine),
    )


def _link_finding(cable: str, mine: list[dict], crossing: int | None) -> Finding:
    """Slow connections from different ports all cross one degraded switch cable."""
    ratio = float(pl.Series([r["ratio"] for r in mine]).median())
    return Finding(
        "slow_switch_link",
        "comm_slow",
        "switch_link",
        cable,
        mine[0]["node"],
        _explained_since(mine, max(2, math.ceil(0.8 * (crossing or len(mine))))),  # as _explains counts
        max(r["last"] for r in mine),
        0.8,
        "replace_cable",
        f"{len(mine)} slow connections from different ports all cross {cable}, and every "
        f"connection crossing it is slow: {ratio:.0%} of their peers' throughput",
        {"slow_connections": len(mine), "crossing": crossing, "throughput_ratio": ratio},
        **_whose(mine),
    )


def _path_finding(r: dict) -> Finding:
    """One connection alone is slow: blame the path between its two ends."""
    comp = f"{_port(r['node'], r['nic_device'])}<->{_port(r['peer_node'], r['nic_device'])}"
    return Finding(
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
        **_whose([r]),
    )


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
    conns = _recent(with_job(conns), period_s, min_windows)
    host_of = _rank_hosts(colls)
    slow = _slow_connections(conns, host_of, factor, min_windows)
    if slow.is_empty():
        return []
    live = _live_sends(conns, host_of, slow, fabric)
    send_ports, carried = _connections_per_port(live)
    rows = slow.to_dicts()
    members, row_ports = _candidates(rows, fabric)
    ports = {**row_ports, **send_ports}
    crossing: dict[str, int] = {}
    utilization: dict[str, float] = {}
    if fabric is not None and host_of is not None:
        crossing, utilization = _cable_loads(live, fabric)
    explaining = [c for c in members if _explains(c, len(members[c]), carried, crossing, utilization, factor)]
    blamed, unexplained = _greedy_cover(members, explaining, len(rows))
    out = []
    for (kind, comp), mine in blamed:
        mine_rows = [rows[i] for i in mine]
        if kind == "port":
            out.append(_port_finding(comp, *ports[comp], mine_rows))
        else:
            out.append(_link_finding(comp, mine_rows, crossing.get(comp)))
    if len(unexplained) == 1 and not out:
        out.append(_path_finding(rows[min(unexplained)]))
    return out
