"""Pieces per connection: each flow's bytes per NIC port pair, cut into the fewest QPs that can reach the bound.

A flow's bytes go in equal shares over its (source port, destination port) pairs: one pair on a
single-port NIC, one per plane on a dual-plane or dual-ToR NIC. Each share is then cut by the
rule of the leaf its own ports sit on (not the first port's leaf): the fewest equal pieces k such
that every piece leaving the source leaf packs onto its live uplinks, and every piece entering the
destination leaf onto its live downlinks, within the lower bound (seconds). When the uplinks are
the binding cut this is the gcd rule (r flows over s uplinks -> s / gcd(r, s) pieces); when the
NIC is the binding cut, one piece per share is often enough.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from c4.traffic.collectives import Flow
from c4.traffic.topology import NicPort, Topology

#: relative slack when comparing a packed peak with the target
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Share:
    """A flow's bytes through one (source port, destination port) pair, cut into ``pieces`` equal QPs."""

    src: NicPort
    dst: NicPort
    bytes: float
    pieces: int


def packed_peak_s(sizes: list[float], caps_bps: np.ndarray) -> float:
    """Seconds to drain the busiest link when pieces are packed largest first onto the least-utilized link."""
    if not sizes:
        return 0.0
    if len(set(sizes)) == 1 and float(caps_bps.min()) == float(caps_bps.max()):
        return math.ceil(len(sizes) / len(caps_bps)) * sizes[0] / float(caps_bps[0])
    load = np.zeros(len(caps_bps))
    for size in sorted(sizes, reverse=True):
        i = int(np.argmin((load + size) / caps_bps))
        load[i] += size
    return float((load / caps_bps).max())


def fewest_cuts(shares: list[float], caps_bps: np.ndarray, target_s: float, max_k: int) -> int:
    """Fewest equal cuts k <= max_k of every share that pack onto the links within target_s.

    When no k reaches the target, the k with the lowest packed peak (the smallest such k).
    """
    if not shares or len(caps_bps) == 0:
        return 1
    best_k, best_peak = 1, math.inf
    for k in range(1, max(1, max_k) + 1):
        peak = packed_peak_s([b / k for b in shares for _ in range(k)], caps_bps)
        if peak <= target_s * (1 + TOLERANCE):
            return k
        if peak < best_peak * (1 - TOLERANCE):
            best_k, best_peak = k, peak
    return best_k


def _spread(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal integers, larger first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _live_caps(topo: Topology, ends: list[tuple[str, str]]) -> np.ndarray:
    """Usable capacity (bytes per second) of the live links among ``ends``."""
    caps = [topo.link(a, b).usable_gbps * 1e9 / 8 for a, b in ends if topo.has_link(a, b)]
    return np.array([c for c in caps if c > 0])


def port_shares(
    topo: Topology,
    flows: list[Flow],
    pairs: list[list[tuple[NicPort, NicPort]]],
    max_qps: int,
    target_s: float,
    balanced: bool = False,
) -> list[list[Share]]:
    """Per flow, its shares over its port pairs, each with the fewest pieces that can reach target_s.

    balanced: every link group aims at its own even balance (its bytes / its capacity) instead
    of target_s: the gcd rule, more pieces, but equal pieces per leaf that colour exactly.

    One piece per pair at least, at most max(max_qps, pairs) pieces per flow: the QPs the job
    runs with today (Flow.qps, what ECMP hashes) are no floor, the plan says how many it needs.
    A share's pieces take the lcm of its source and destination leaf's cuts
    when that fits, else the larger of the two. In 3 tiers a pod's aggregation-to-core links
    are packed the same way (leaving and entering pods).
    """
    out_shares: dict[str, list[float]] = defaultdict(list)
    in_shares: dict[str, list[float]] = defaultdict(list)
    pod_out: dict[int, list[float]] = defaultdict(list)
    pod_in: dict[int, list[float]] = defaultdict(list)
    for f, fp in zip(flows, pairs, strict=True):
        b = f.bytes / len(fp)
        for a, d in fp:
            if a.leaf == d.leaf:
                continue
            out_shares[a.leaf].append(b)
            in_shares[d.leaf].append(b)
            if topo.tiers == 3 and topo.pod_of.get(a.leaf) != topo.pod_of.get(d.leaf):
                pod_out[topo.pod_of[a.leaf]].append(b)
                pod_in[topo.pod_of[d.leaf]].append(b)
    cap_k = max(1, max_qps)

    def cuts(sizes: list[float], caps_bps: np.ndarray) -> int:
        target = sum(sizes) / float(caps_bps.sum()) if balanced and len(caps_bps) else target_s
        return fewest_cuts(sizes, caps_bps, target, cap_k)

    k_up = {
        leaf: cuts(s, _live_caps(topo, [(leaf, sp) for sp in topo.spines])) for leaf, s in out_shares.items()
    }
    k_down = {
        leaf: cuts(s, _live_caps(topo, [(sp, leaf) for sp in topo.spines])) for leaf, s in in_shares.items()
    }
    k_pod_out: dict[int, int] = {}
    k_pod_in: dict[int, int] = {}
    for pod, s in pod_out.items():
        aggs = [a for a in topo.spines if topo.pod_of.get(a) == pod]
        k_pod_out[pod] = cuts(s, _live_caps(topo, [(a, c) for a in aggs for c in topo.cores]))
    for pod, s in pod_in.items():
        aggs = [a for a in topo.spines if topo.pod_of.get(a) == pod]
        k_pod_in[pod] = cuts(s, _live_caps(topo, [(c, a) for a in aggs for c in topo.cores]))
    result = []
    for f, fp in zip(flows, pairs, strict=True):
        n = len(fp)
        caps = _spread(max(max_qps, n), n)
        shares = []
        for (a, d), cap in zip(fp, caps, strict=True):
            if a.leaf == d.leaf:
                k = 1
            else:
                ks = [k_up[a.leaf], k_down[d.leaf]]
                if topo.tiers == 3 and topo.pod_of.get(a.leaf) != topo.pod_of.get(d.leaf):
                    ks += [k_pod_out[topo.pod_of[a.leaf]], k_pod_in[topo.pod_of[d.leaf]]]
                k = math.lcm(*ks)
                if k > cap:
                    k = max(ks)
            shares.append(Share(a, d, f.bytes / n, min(k, cap)))
        result.append(shares)
    return result
