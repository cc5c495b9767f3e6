"""Link loads of the three ways to route flows: ECMP hashing (k QPs), ideal spraying, and the lower bound."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np

from c4.traffic.collectives import Flow
from c4.traffic.hashing import FiveTuple, lag_port, mlx5_sport, switch_hash
from c4.traffic.topology import NicPort, Topology


def capacities(topo: Topology) -> np.ndarray:
    """Usable capacity per link id, bytes per second (0 for a down link)."""
    return np.array([link.usable_gbps * 1e9 / 8 for link in topo.links])


def path_links(topo: Topology, nodes: list[str]) -> list[int]:
    """Link ids along a node path."""
    return [topo.link(a, b).id for a, b in zip(nodes, nodes[1:], strict=False)]


def live_paths(topo: Topology, src: NicPort, dst: NicPort) -> list[list[str]]:
    """Every usable node path from one NIC port to another."""
    out = []
    for mid in topo.spine_paths(src.leaf, dst.leaf):
        nodes = [src.name, *mid, dst.name]
        if all(topo.live(a, b) for a, b in zip(nodes, nodes[1:], strict=False)):
            out.append(nodes)
    return out


def ecmp_subflows(
    topo: Topology, flows: list[Flow], seed: int, hash_kind: str = "crc32"
) -> list[tuple[list[int], float]]:
    """(link ids, bytes) per QP under ECMP: random QP numbers -> mlx5 source port -> switch hashes."""
    rng = random.Random(seed)
    out = []
    hashers: dict[str, object] = {}
    hops_cache: dict[tuple[str, str], list[str]] = {}
    for f in flows:
        ports_src = topo.hosts[f.src].nics[f.src_nic]
        ports_dst = topo.hosts[f.dst].nics[f.dst_nic]
        for _q in range(f.qps):
            sport = mlx5_sport(rng.randrange(1, 1 << 24), rng.randrange(1, 1 << 24))
            t = FiveTuple(ports_src[0].ip, ports_dst[0].ip, sport)
            p = lag_port(t, len(ports_src), seed) if len(ports_src) > 1 else 0
            src, dst = ports_src[p], ports_dst[min(p, len(ports_dst) - 1)]
            nodes = [src.name, src.leaf]
            cur = src.leaf
            while cur != dst.leaf:  # hop by hop: each switch hashes among its live next hops toward dst
                nexts = hops_cache.get((cur, dst.leaf))
                if nexts is None:
                    nexts = hops_cache[(cur, dst.leaf)] = sorted(topo.next_hops(cur, dst.leaf))
                if not nexts:
                    break
                h = hashers.setdefault(cur, switch_hash(cur, hash_kind, seed))
                cur = nexts[h.pick(t, len(nexts))]  # type: ignore[attr-defined]
                nodes.append(cur)
            nodes.append(dst.name)
            out.append((path_links(topo, nodes), f.bytes / f.qps))
    return out


def spray_fractions(topo: Topology, flows: list[Flow]) -> list[tuple[dict[int, float], float]]:
    """(link id -> fraction of the flow, bytes) under ideal per-packet spraying over every live path and port."""
    cache: dict[tuple, dict[int, float]] = {}
    out = []
    for f in flows:
        key = (f.src, f.src_nic, f.dst, f.dst_nic)
        frac = cache.get(key)
        if frac is None:
            frac = defaultdict(float)
            ports = list(
                zip(topo.hosts[f.src].nics[f.src_nic], topo.hosts[f.dst].nics[f.dst_nic], strict=False)
            )
            live_ports = [(a, b) for a, b in ports if topo.live(a.name, a.leaf) and topo.live(b.leaf, b.name)]
            for a, b in live_ports:
                paths = live_paths(topo, a, b)
                for nodes in paths:
                    for lid in path_links(topo, nodes):
                        frac[lid] += 1.0 / (len(live_ports) * len(paths))
            cache[key] = frac = dict(frac)
        out.append((frac, f.bytes))
    return out


def loads_from_subflows(n_links: int, subflows) -> np.ndarray:
    """Bytes per link."""
    load = np.zeros(n_links)
    for links, b in subflows:
        load[links] += b
    return load


def loads_from_fractions(n_links: int, fractions) -> np.ndarray:
    """Bytes per link from fractional (sprayed) flows."""
    load = np.zeros(n_links)
    for frac, b in fractions:
        for lid, x in frac.items():
            load[lid] += b * x
    return load


def max_utilization(load: np.ndarray, cap: np.ndarray) -> float:
    """Max over links of bytes / capacity (seconds to drain the busiest link)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(cap > 0, load / np.where(cap > 0, cap, 1), np.where(load > 0, np.inf, 0))
    return float(u.max()) if len(u) else 0.0


def lower_bound(topo: Topology, flows: list[Flow]) -> float:
    """The fractional lower bound on max link utilization (seconds per collective) of any routing.

    Cuts every byte must cross: a NIC's live ports (send and receive); the live uplinks of the
    leaves a NIC is homed on (one leaf, or a dual-ToR pair) for bytes leaving them, and their
    downlinks for bytes entering; in 3 tiers also a pod's agg->core links. Ideal spraying reaches
    it on symmetric fabrics; no single-path routing can beat it.
    """
    bps = 1e9 / 8
    demand: dict[tuple, float] = defaultdict(float)  # cut -> bytes
    homes: dict[tuple[str, int], frozenset[str]] = {}

    def home(h: str, n: int) -> frozenset[str]:
        g = homes.get((h, n))
        if g is None:
            g = homes[(h, n)] = frozenset(p.leaf for p in topo.hosts[h].nics[n])
        return g

    for f in flows:
        demand[("tx", f.src, f.src_nic)] += f.bytes
        demand[("rx", f.dst, f.dst_nic)] += f.bytes
        a, b = home(f.src, f.src_nic), home(f.dst, f.dst_nic)
        if a.isdisjoint(b):
            demand[("up", a)] += f.bytes
            demand[("down", b)] += f.bytes
        if topo.tiers == 3:
            pa = {topo.pod_of[x] for x in a}
            pb = {topo.pod_of[x] for x in b}
            if pa.isdisjoint(pb) and len(pa) == 1 and len(pb) == 1:
                demand[("pod_out", next(iter(pa)))] += f.bytes
                demand[("pod_in", next(iter(pb)))] += f.bytes
    switches = set(topo.spines)
    bound = 0.0
    for key, b in demand.items():
        kind = key[0]
        if kind == "tx":
            cap = sum(topo.link(p.name, p.leaf).usable_gbps for p in topo.hosts[key[1]].nics[key[2]])
        elif kind == "rx":
            cap = sum(topo.link(p.leaf, p.name).usable_gbps for p in topo.hosts[key[1]].nics[key[2]])
        elif kind == "up":
            cap = sum(lk.usable_gbps for leaf in key[1] for lk in topo._up[leaf] if lk.dst in switches)
        elif kind == "down":
            cap = sum(
                topo.link(s, leaf).usable_gbps
                for leaf in key[1]
                for s in topo.spines
                if topo.has_link(s, leaf)
            )
        else:
            aggs = [a for a in topo.spines if topo.pod_of.get(a) == key[1]]
            if kind == "pod_out":
                cap = sum(
                    topo.link(a, c).usable_gbps for a in aggs for c in topo.cores if topo.has_link(a, c)
                )
            else:
                cap = sum(
                    topo.link(c, a).usable_gbps for a in aggs for c in topo.cores if topo.has_link(c, a)
                )
        bound = max(bound, b / (cap * bps) if cap else float("inf"))
    return bound
