"""Align the ranks' clocks of a step trace: a p2p pair and a collective end together on every member.

Hosts' clocks differ by milliseconds even under NTP, as much as a p2p transfer takes; comparing
start times across hosts then picks the wrong "later arriver". The median difference between the
ends of the ops two ranks share estimates their clock offset; offsets spread from rank to rank
along those links (breadth first, the rank with the most shared ops first).
"""

from __future__ import annotations

from collections import deque

import polars as pl


def clock_offsets_s(nodes: pl.DataFrame) -> dict[int, float]:
    """Per rank, its clock minus the reference clock, from ``nodes`` (rank, end_s, group; group null if none)."""
    grouped = nodes.filter(pl.col("group").is_not_null())
    if grouped.is_empty():
        return {}
    ref = grouped.group_by("group").agg(
        pl.col("rank").sort_by("rank").first().alias("ref_rank"),
        pl.col("end_s").sort_by("rank").first().alias("ref_end"),
    )
    diffs = (
        grouped.join(ref, on="group")
        .filter(pl.col("rank") != pl.col("ref_rank"))
        .group_by(["ref_rank", "rank"])
        .agg((pl.col("end_s") - pl.col("ref_end")).median().alias("d"), pl.len().alias("n"))
    )
    edges: dict[int, list[tuple[int, float]]] = {}
    weight: dict[int, int] = {}
    for a, b, d, n in diffs.iter_rows():
        edges.setdefault(a, []).append((b, d))  # clock(b) - clock(a) = d
        edges.setdefault(b, []).append((a, -d))
        weight[a] = weight.get(a, 0) + n
        weight[b] = weight.get(b, 0) + n
    offsets: dict[int, float] = {}
    for root in sorted(weight, key=lambda r: (-weight[r], r)):
        if root in offsets:
            continue
        offsets[root] = 0.0
        queue = deque([root])
        while queue:
            a = queue.popleft()
            for b, d in edges.get(a, []):
                if b not in offsets:
                    offsets[b] = offsets[a] + d
                    queue.append(b)
    return offsets
