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
    """The fractional lower bound on max link utilization that ideal spraying reaches on symmetric fabrics.

    Every byte leaving a leaf crosses one of its live uplinks, every byte entering one of its live
    downlinks, and every byte of a NIC crosses that NIC's live ports; so no routing can do better
    than the busiest of these aggregates divided by their aggregate capacity.
    """
    out_leaf: dict[str, float] = defaultdict(float)
    in_leaf: dict[str, float] = defaultdict(float)
    nic_tx: dict[tuple, float] = defaultdict(float)
    nic_rx: dict[tuple, float] = defaultdict(float)
    for f in flows:
        src_ports = topo.hosts[f.src].nics[f.src_nic]
        dst_ports = topo.hosts[f.dst].nics[f.dst_nic]
        nic_tx[(f.src, f.src_nic)] += f.bytes
        nic_rx[(f.dst, f.dst_nic)] += f.bytes
        src_leaf, dst_leaf = src_ports[0].leaf, dst_ports[0].leaf
        if src_leaf != dst_leaf:
            out_leaf[src_leaf] += f.bytes
            in_leaf[dst_leaf] += f.bytes
    bound = 0.0
    bps = 1e9 / 8
    for (h, n), b in nic_tx.items():
        cap = sum(topo.link(p.name, p.leaf).usable_gbps for p in topo.hosts[h].nics[n]) * bps
        bound = max(bound, b / cap if cap else float("inf"))
    for (h, n), b in nic_rx.items():
        cap = sum(topo.link(p.leaf, p.name).usable_gbps for p in topo.hosts[h].nics[n]) * bps
        bound = max(bound, b / cap if cap else float("inf"))
    for leaf, b in out_leaf.items():
        cap = sum(link.usable_gbps for link in topo._up[leaf] if link.dst in topo.spines) * bps
        bound = max(bound, b / cap if cap else float("inf"))
    for leaf, b in in_leaf.items():
        cap = sum(topo.link(s, leaf).usable_gbps for s in topo.spines if topo.has_link(s, leaf)) * bps
        bound = max(bound, b / cap if cap else float("inf"))
    return bound
