"""Slow pipeline links from NCCL Inspector's p2p records: a transfer takes the shorter of its two ends' times.

A pipeline transfer is a Send on one rank and the matching Recv on its peer. Inspector's ``p2p_perf``
records (its default, non-verbose form) give each its execution time, message size and algorithm
bandwidth; each end's time includes waiting for the other end to post, so the end that posts last waits
least and its time is about the transfer itself. A rank that is late (a slow worker) or that waits on
one (a pipeline victim) makes one end of its transfers long, never both: its peer posted long before.
A slow link (a NIC port, a cable, a bad path between two GPUs) makes both ends long on every transfer.

So a directed link (sender -> receiver, on one communicator) is slow when, over a trailing stretch of at
least ``MIN_TRANSFERS`` transfers lasting ``MIN_SPAN_PERIODS`` iterations (since the last few normal
transfers in a row), at least 80% of the sender's
Sends to the receiver *and* of the receiver's Recvs from the sender take ``SLOW_LINK_FACTOR`` times the
job's typical p2p time for that message size (the median link end), and ``MIN_EXCESS_US`` more. Both
directions of a pair are one finding, named by the GPUs at its ends (lower pipeline rank first), class
``slow_comm``. The ranks of its model replica that only waited on it are added to ``affected`` by
analytics/victims.py, never blamed.

Inspector's p2p execution time is the longest of the op's channels' kernel times on the GPU
(``calculateMaxKernelExecTimeUsecsP2p``, plugins/profiler/inspector/inspector.cc at NVIDIA/nccl
5067397c): a p2p kernel runs from its launch until its data has gone through, waiting on the peer's
buffer included. Field names: NVIDIA/nccl plugins/profiler/inspector/inspector_json.cc (``p2p``, ``p2p_peer``,
``p2p_msg_size_bytes``, ``p2p_exec_time_us``, ``p2p_algobw_gbs``), as the nccl_inspector sampler stores
them in nccl_collectives (``kind = 'p2p'``, ``coll`` Send/Recv, ``peer``, ``msg_size_bytes``,
``exec_time_us``, ``algobw_gbs``).
"""

from __future__ import annotations

import math
from datetime import datetime

import polars as pl

from c4.analytics.findings import Finding
from c4.analytics.jobs import with_job
from c4.analytics.periods import job_periods
from c4.analytics.rank_gpu import RankPlaces

DETECTOR = "p2p_link"
#: Both ends of a slow link's transfers take this many times the typical link end. The twin's slow links
#: are 4-8x; a receiver that waits on a slow worker has a long Recv but its sender's Send is short.
SLOW_LINK_FACTOR = 2.0
#: ... and at least this much longer (microseconds): below it a p2p kernel's time is launch noise.
MIN_EXCESS_US = 1000.0
#: A slow stretch holds at least this share of each end's transfers (a few normal ones do not end it).
MIN_FRACTION = 0.8
#: ... which begins after the last run of more than this many normal transfers ...
MAX_GAP = 2
#: ... counts at least this many transfers per end ...
MIN_TRANSFERS = 8
#: ... and lasts at least this many iteration periods of its job (a blip of a step raises nothing).
MIN_SPAN_PERIODS = 2.0

_KEYS = ["job", "comm_id", "src", "dst"]


def _ends(colls: pl.DataFrame) -> pl.DataFrame:
    """One row per Inspector p2p record, keyed by the directed link it used: ``src`` sends to ``dst``
    (communicator ranks); ``end`` says whether the record is the Send or the Recv."""
    needed = {"kind", "coll", "peer", "exec_time_us", "rank", "comm_id"}
    if colls.is_empty() or not needed <= set(colls.columns) or not (colls["kind"] == "p2p").any():
        return pl.DataFrame()
    c = with_job(colls).filter((pl.col("kind") == "p2p") & pl.col("peer").is_not_null())
    c = c.drop_nulls("exec_time_us")
    for col, dtype in (("msg_size_bytes", pl.Int64), ("algobw_gbs", pl.Float64), ("pid", pl.Int64)):
        if col not in c.columns:
            c = c.with_columns(pl.lit(None, dtype=dtype).alias(col))
    c = c.filter(pl.col("coll").is_in(["Send", "Recv", "send", "recv"]))  # as Inspector names them
    if c.is_empty():
        return pl.DataFrame()
    send = pl.col("coll").is_in(["Send", "send"])
    return c.select(
        "job",
        "comm_id",
        pl.when(send).then(pl.col("rank")).otherwise(pl.col("peer")).cast(pl.Int64).alias("src"),
        pl.when(send).then(pl.col("peer")).otherwise(pl.col("rank")).cast(pl.Int64).alias("dst"),
        pl.when(send).then(pl.lit("send")).otherwise(pl.lit("recv")).alias("end"),
        "ts",
        pl.col("exec_time_us").cast(pl.Float64),
        pl.col("msg_size_bytes").cast(pl.Int64).fill_null(-1),
        pl.col("algobw_gbs").cast(pl.Float64),
        "rank",
        "hostname",
        pl.col("pid").cast(pl.Int64),
    )


def _stretch(hits: list[bool], ts: list[datetime]) -> tuple[int, datetime | None]:
    """(length, first ts) of the trailing stretch of one link end's transfers since the last run of more
    than ``MAX_GAP`` normal ones, when at least ``MIN_FRACTION`` of it and of its newest
    ``MIN_TRANSFERS`` were slow; (0, None) otherwise (too short, or a link that recovered)."""
    tail = hits[-MIN_TRANSFERS:]
    if len(tail) < MIN_TRANSFERS or sum(tail) < MIN_FRACTION * MIN_TRANSFERS:
        return 0, None
    first, gap = len(hits), 0
    for i in range(len(hits) - 1, -1, -1):
        if hits[i]:
            first, gap = i, 0
        else:
            gap += 1
            if gap > MAX_GAP:
                break
    n = len(hits) - first
    if n < MIN_TRANSFERS or sum(hits[first:]) < MIN_FRACTION * n:
        return 0, None
    return n, ts[first]


def _slow_links(ends: pl.DataFrame, periods: dict[str, float]) -> list[dict]:
    """Directed links both of whose ends are slow over a trailing stretch, with what shows it."""
    per_end = ends.group_by([*_KEYS, "end", "msg_size_bytes"]).agg(
        pl.col("exec_time_us").median().alias("med")
    )
    typical = per_end.group_by(["job", "msg_size_bytes"]).agg(pl.col("med").median().alias("typical_us"))
    thr = pl.max_horizontal(SLOW_LINK_FACTOR * pl.col("typical_us"), pl.col("typical_us") + MIN_EXCESS_US)
    marked = ends.join(typical, on=["job", "msg_size_bytes"]).with_columns(
        (pl.col("exec_time_us") >= thr).alias("slow")
    )
    # only links both of whose ends have enough slow transfers are followed in time (a victim's Recvs
    # are slow too, but its sender's Sends are not)
    both = (
        marked.group_by([*_KEYS, "end"])
        .agg(pl.col("slow").sum().alias("n_slow"))
        .filter(pl.col("n_slow") >= math.ceil(MIN_FRACTION * MIN_TRANSFERS))  # what _stretch needs at least
        .group_by(_KEYS)
        .agg(pl.len().alias("n_ends"))
        .filter(pl.col("n_ends") == 2)
        .select(_KEYS)
    )
    if both.is_empty():
        return []
    sides = (
        marked.join(both, on=_KEYS, how="semi")
        .sort("ts")
        .group_by([*_KEYS, "end"], maintain_order=True)
        .agg(
            pl.col("slow"),
            pl.col("ts"),
            pl.col("exec_time_us"),
            pl.col("algobw_gbs"),
            pl.col("typical_us").median(),
            pl.col("msg_size_bytes").first(),
            pl.col("hostname").last(),
            pl.col("pid").last(),
            pl.col("rank").first(),
        )
        .filter(pl.col("slow").list.tail(MIN_TRANSFERS).list.mean() >= MIN_FRACTION)
    )
    found: dict[tuple, dict] = {}
    for side in sides.iter_rows(named=True):
        n, since = _stretch(side["slow"], side["ts"])
        period = periods.get(side["job"])
        span_s = (side["ts"][-1] - since).total_seconds() if since else 0.0
        if n == 0 or (period and span_s < MIN_SPAN_PERIODS * period):
            continue
        key = tuple(side[k] for k in _KEYS)
        recent = side["exec_time_us"][-n:]
        bw = [x for x in side["algobw_gbs"][-n:] if x is not None]
        found.setdefault(key, {})[side["end"]] = {
            "since": since,
            "last": side["ts"][-1],
            "transfers": n,
            "per_s": (n - 1) / span_s if span_s > 0 else None,  # transfers per second over the stretch
            "exec_us": float(pl.Series(recent).median()),
            "algobw_gbs": float(pl.Series(bw).median()) if bw else None,
            "typical_us": float(side["typical_us"]),
            "msg_size_bytes": side["msg_size_bytes"] if side["msg_size_bytes"] >= 0 else None,
            "host": side["hostname"],
            "pid": side["pid"],
        }
    return [
        {"key": key, **e}
        for key, e in found.items()
        if "send" in e and "recv" in e  # both ends: a wait makes one end long, never both
    ]


def _typical_bw(ends: pl.DataFrame) -> dict[tuple[str, int], float]:
    """Per (job, message size): the median algorithm bandwidth of its p2p records (GB/s, as Inspector writes it)."""
    bw = ends.drop_nulls("algobw_gbs").group_by(["job", "msg_size_bytes"]).agg(pl.col("algobw_gbs").median())
    return {(j, s): float(b) for j, s, b in bw.rows()}


def _gpu(places: RankPlaces, comm: str, rank: int, host: str | None) -> tuple[str, str]:
    """(component, node) of one end of a link: its GPU where the identity view or its host place it."""
    where = places.of(comm, rank, host or None)
    if where is not None:
        return where.component, where.node
    return f"{comm}/rank{rank}", host or ""


def _excess_s_per_iteration(pair: list[dict], period_s: float | None) -> float | None:
    """How much longer the link's transfers take per iteration than typical ones: per direction, the time
    over typical of its shorter end, times its transfers per iteration."""
    if not period_s:
        return None
    total = 0.0
    for d in pair:
        rates = [e["per_s"] for e in (d["send"], d["recv"]) if e["per_s"]]
        if not rates:
            return None
        own = min(d["send"]["exec_us"], d["recv"]["exec_us"])
        total += max(0.0, own - d["send"]["typical_us"]) / 1e6 * min(rates) * period_s
    return total


def _finding(pair: list[dict], places: RankPlaces, typical_bw: dict, period_s: float | None) -> Finding:
    """One finding for a pair of pipeline ranks whose link is slow in one or both directions."""
    job, comm, src, dst = pair[0]["key"]
    lo, hi = sorted((src, dst))
    hosts: dict[int, str | None] = {}
    pids: dict[int, int | None] = {}
    for d in pair:
        _, _, s, r = d["key"]
        hosts[s], pids[s] = d["send"]["host"], d["send"]["pid"]
        hosts[r], pids[r] = d["recv"]["host"], d["recv"]["pid"]
    (a, node), (b, _) = _gpu(places, comm, lo, hosts.get(lo)), _gpu(places, comm, hi, hosts.get(hi))
    # the link's own time: per direction the shorter end (the other end may also have waited)
    own_us = max(min(d["send"]["exec_us"], d["recv"]["exec_us"]) for d in pair)
    typical_us = pair[0]["send"]["typical_us"]
    size = pair[0]["send"]["msg_size_bytes"]
    bws = [x for d in pair for x in (d["send"]["algobw_gbs"], d["recv"]["algobw_gbs"]) if x is not None]
    dirs = sorted("forward" if d["key"][2] == lo else "backward" for d in pair)
    ratio = own_us / typical_us if typical_us > 0 else float("inf")
    excess_s = _excess_s_per_iteration(pair, period_s)
    # the replica waits for every slow transfer (a pipeline link is on its critical path): the step took
    # period_s, and would take period_s - excess_s without it
    cost = (
        excess_s / (period_s - excess_s)
        if excess_s is not None and period_s and period_s > excess_s
        else None
    )
    return Finding(
        DETECTOR,
        "slow_comm",
        "link",
        f"{a}->{b}",
        node,
        min(max(d["send"]["since"], d["recv"]["since"]) for d in pair),
        max(max(d["send"]["last"], d["recv"]["last"]) for d in pair),
        0.85,
        "investigate_link",
        f"pipeline transfers between rank {lo} ({a}) and rank {hi} ({b}) of {comm} take {ratio:.1f}x the job's "
        f"typical at both ends ({own_us / 1e3:.1f} ms vs {typical_us / 1e3:.1f} ms, {'/'.join(dirs)}): the link "
        "between them, not a rank",
        {
            "comm": comm,
            "ranks": [lo, hi],
            "procs": [
                f"{hosts.get(r)}:{pids.get(r)}" for r in (lo, hi) if hosts.get(r) and pids.get(r) is not None
            ],
            "directions": ",".join(dirs),
            "transfer_us": own_us,
            "typical_us": typical_us,
            "transfer_over_typical": ratio,
            "transfers": min(min(d["send"]["transfers"], d["recv"]["transfers"]) for d in pair),
            "msg_size_bytes": size,
            "algobw_gbs": min(bws) if bws else None,
            "typical_algobw_gbs": typical_bw.get((job, size if size is not None else -1)),
            "sender_host": hosts.get(lo),
            "receiver_host": hosts.get(hi),
            "excess_s_per_iteration": excess_s,
            "iteration_period_s": period_s,
            **(
                {"slowdown_from": "link excess per iteration over the iteration period"}
                if cost is not None
                else {}
            ),
        },
        f"SELECT ts, rank, peer, coll, msg_size_bytes, exec_time_us, algobw_gbs FROM nccl_collectives "
        f"WHERE comm_id = '{comm}' AND kind = 'p2p' AND rank IN ({lo}, {hi}) ORDER BY ts",
        job=job,
        communicator=comm,
        slowdown_frac=cost,
    )


def slow_link_findings(
    colls: pl.DataFrame, places: RankPlaces | None = None, periods_s: dict[str, float] | None = None
) -> list[Finding]:
    """Pipeline (p2p) links whose transfers are slow at both ends: one finding per pair of ranks, class
    ``slow_comm``, component ``<gpu a>-><gpu b>``; nothing without Inspector p2p records. ``periods_s``:
    each job's iteration period (analytics/periods.job_periods), when already known."""
    ends = _ends(colls)
    if ends.is_empty():
        return []
    periods_s = job_periods(with_job(colls)) if periods_s is None else periods_s
    slow = _slow_links(ends, periods_s)
    if not slow:
        return []
    places = places or RankPlaces()
    pairs: dict[tuple, list[dict]] = {}
    for d in slow:
        job, comm, src, dst = d["key"]
        pairs.setdefault((job, comm, min(src, dst), max(src, dst)), []).append(d)
    typical_bw = _typical_bw(ends)
    return [_finding(p, places, typical_bw, periods_s.get(p[0]["key"][0])) for _, p in sorted(pairs.items())]
