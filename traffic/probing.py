"""Source-port -> path discovery: the table a probe sweep (RoCEv2 probes with rising TTL) would fill."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from c4.traffic.hashing import SPORT_MAX, SPORT_MIN, FiveTuple, switch_hash
from c4.traffic.planner import SportTable
from c4.traffic.topology import Topology


def trace(
    topo: Topology, src_ip: str, dst_ip: str, sport: int, hasher_for, port_of: dict | None = None
) -> tuple[str, ...]:
    """The switch path a packet takes: each switch hashes the 5-tuple among its live next hops."""
    if port_of is None:
        port_of = {p.ip: p for p in topo.ports()}
    src, dst = port_of[src_ip], port_of[dst_ip]
    t = FiveTuple(src_ip, dst_ip, sport)
    nodes = [src.leaf]
    cur = src.leaf
    while cur != dst.leaf:
        nexts = sorted(topo.next_hops(cur, dst.leaf))
        if not nexts:
            raise ValueError(f"{src_ip}->{dst_ip}: no live next hop at {cur}")
        cur = nexts[hasher_for(cur).pick(t, len(nexts))]
        nodes.append(cur)
    return tuple(nodes)


def probe_table(
    topo: Topology,
    pairs: Iterable[tuple[str, str]],
    sports: Iterable[int] = range(SPORT_MIN, SPORT_MAX + 1, 97),
    hasher_for=None,
) -> SportTable:
    """(src_ip, dst_ip) -> path -> sports seen taking it, by tracing each probe through the hash model.

    On a real fabric the same table comes from sending ``roce.probe`` packets per sport with rising
    TTL; here the switches' hashes stand in for the fabric (default: crc32, seed 0, as the planner).
    """
    if hasher_for is None:
        cache: dict[str, object] = {}

        def hasher_for(sw: str):
            h = cache.get(sw)
            if h is None:
                h = cache[sw] = switch_hash(sw)
            return h

    port_of = {p.ip: p for p in topo.ports()}
    sports = list(sports)
    table: SportTable = {}
    for src_ip, dst_ip in pairs:
        paths: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for sport in sports:
            paths[trace(topo, src_ip, dst_ip, sport, hasher_for, port_of)].append(sport)
        table[(src_ip, dst_ip)] = dict(paths)
    return table
