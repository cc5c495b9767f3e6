"""C4P planner: every connection (or split piece) gets a NIC port, a path and a UDP source port, minimizing max link load."""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from c4.traffic.collectives import Flow
from c4.traffic.coloring import equitable_colouring
from c4.traffic.hashing import SPORT_MAX, SPORT_MIN, switch_hash
from c4.traffic.routing import capacities, live_paths, path_links
from c4.traffic.topology import NicPort, Topology, TopologyError


@dataclass
class Piece:
    """One QP of one connection: the unit the planner routes."""

    flow: int
    job: str
    src: str
    dst: str
    channel: int
    qp: int
    bytes: float
    src_port: NicPort | None = None
    dst_port: NicPort | None = None
    nodes: list[str] = field(default_factory=list)
    links: list[int] = field(default_factory=list)
    sport: int = 0


@dataclass
class Plan:
    """Pieces with their routes, the link-load ledger, and bookkeeping."""

    topo: Topology
    flows: list[Flow]
    pieces: list[Piece]
    load: np.ndarray  # bytes per link id
    churn: int = 0

    def max_utilization(self) -> float:
        """Seconds to drain the busiest link (bytes / capacity)."""
        cap = capacities(self.topo)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(cap > 0, self.load / np.where(cap > 0, cap, 1), np.where(self.load > 0, np.inf, 0))
        return float(u.max())

    def subflows(self) -> list[tuple[list[int], float]]:
        """(link ids, bytes) per piece, for the fluid simulator."""
        return [(p.links, p.bytes) for p in self.pieces]


def split_counts(topo: Topology, flows: list[Flow], max_qps: int) -> list[int]:
    """Pieces per flow by the gcd rule: r flows over s live uplinks at the source leaf -> s / gcd(r, s).

    Splitting each of r equal flows into s/gcd(r, s) pieces lets every uplink carry exactly
    r/gcd(r, s) pieces: the load of ideal spraying. Capped at max_qps; at least the flow's own QPs.
    """
    r: dict[str, int] = defaultdict(int)
    leaf_of = {}
    for i, f in enumerate(flows):
        sp, dp = topo.hosts[f.src].nics[f.src_nic][0], topo.hosts[f.dst].nics[f.dst_nic][0]
        leaf_of[i] = (sp.leaf, dp.leaf)
        if sp.leaf != dp.leaf:
            r[sp.leaf] += 1
    out = []
    for i, f in enumerate(flows):
        src_leaf, dst_leaf = leaf_of[i]
        ports = len(topo.hosts[f.src].nics[f.src_nic])
        if src_leaf == dst_leaf:
            out.append(max(f.qps, ports))
            continue
        s = sum(1 for sp in topo.spines if topo.live(src_leaf, sp))
        k = s // math.gcd(r[src_leaf], s) if s else 1
        if topo.tiers == 3:  # a second hashing stage (agg -> core): finer pieces let the greedy balance it
            k = max(k, max_qps)
        k = max(k, f.qps, ports)
        out.append(min(k, max(max_qps, ports)))
    return out


class Planner:
    """Plans flows onto a topology with a global ledger (concurrent jobs share it)."""

    def __init__(
        self, topo: Topology, max_qps: int = 8, hash_kind: str = "crc32", hash_seed: int = 0
    ) -> None:
        self.topo = topo
        self.max_qps = max_qps
        self.hash_kind = hash_kind
        self.hash_seed = hash_seed
        self._hashers: dict[str, object] = {}
        self._choices: dict[tuple[str, str], list[str]] = {}

    # --- planning ---------------------------------------------------------------
    def plan(self, flows: list[Flow]) -> Plan:
        """Route every flow; returns the plan with its ledger."""
        topo = self.topo
        cap = capacities(topo)
        load = np.zeros(len(topo.links))
        pieces: list[Piece] = []
        counts = split_counts(topo, flows, self.max_qps)
        for i, (f, k) in enumerate(zip(flows, counts, strict=True)):
            for q in range(k):
                pieces.append(Piece(i, f.job, f.src, f.dst, f.channel, q, f.bytes / k))
        self._assign_ports(pieces, flows, load)
        cross = [p for p in pieces if p.src_port.leaf != p.dst_port.leaf]
        local = [p for p in pieces if p.src_port.leaf == p.dst_port.leaf]
        for p in local:
            self._route(p, [p.src_port.name, p.src_port.leaf, p.dst_port.name], load)
        if topo.tiers == 2 and self._uniform_spines(cross):
            self._colour(cross, load)
        else:
            self._greedy(sorted(cross, key=lambda p: -p.bytes), load, cap)
        plan = Plan(topo, flows, pieces, load)
        self._repair(plan, cap)
        for p in pieces:
            p.sport = self.sport_for(p)
        return plan

    def _assign_ports(self, pieces: list[Piece], flows: list[Flow], load: np.ndarray) -> None:
        """Balance pieces over the ports of each NIC (dual-port NICs), by bytes."""
        topo = self.topo
        port_bytes: dict[str, float] = defaultdict(float)
        for p in pieces:
            f = flows[p.flow]
            srcs = [x for x in topo.hosts[f.src].nics[f.src_nic] if topo.live(x.name, x.leaf)]
            dsts = [x for x in topo.hosts[f.dst].nics[f.dst_nic] if topo.live(x.leaf, x.name)]
            if not srcs or not dsts:
                raise TopologyError(f"flow {f.src}->{f.dst} nic {f.src_nic}: no live NIC port")
            best = min(
                range(len(srcs)),
                key=lambda j: port_bytes[srcs[j].name] + port_bytes[dsts[min(j, len(dsts) - 1)].name + "#rx"],
            )
            p.src_port, p.dst_port = srcs[best], dsts[min(best, len(dsts) - 1)]
            port_bytes[p.src_port.name] += p.bytes
            port_bytes[p.dst_port.name + "#rx"] += p.bytes

    def _uniform_spines(self, pieces: list[Piece]) -> bool:
        """Every leaf reaches every spine both ways (no failures): colouring applies."""
        topo = self.topo
        leaves = {p.src_port.leaf for p in pieces} | {p.dst_port.leaf for p in pieces}
        return all(topo.live(leaf, s) and topo.live(s, leaf) for leaf in leaves for s in topo.spines)

    def _route(self, p: Piece, nodes: list[str], load: np.ndarray) -> None:
        p.nodes = nodes
        p.links = path_links(self.topo, nodes)
        load[p.links] += p.bytes

    def _colour(self, pieces: list[Piece], load: np.ndarray) -> None:
        """Equitable bipartite edge colouring: each leaf's pieces spread evenly over spines, both ways."""
        spines = self.topo.spines
        # group pieces so each vertex's edges of one size sit together: equal pieces balance exactly
        order = sorted(range(len(pieces)), key=lambda i: (-pieces[i].bytes, pieces[i].flow, pieces[i].qp))
        edges = [(pieces[i].src_port.leaf, pieces[i].dst_port.leaf) for i in order]
        colours = equitable_colouring(edges, len(spines))
        for i, c in zip(order, colours, strict=True):
            p = pieces[i]
            self._route(
                p, [p.src_port.name, p.src_port.leaf, spines[c], p.dst_port.leaf, p.dst_port.name], load
            )

    def _greedy(self, pieces: list[Piece], load: np.ndarray, cap: np.ndarray) -> None:
        """Least-loaded path per piece (largest first), for failures, oversubscription and 3 tiers."""
        topo = self.topo
        inv = np.where(cap > 0, 1.0 / np.where(cap > 0, cap, 1), np.inf)
        path_cache: dict[tuple[str, str], list[tuple[list[str], list[int]]]] = {}
        for p in pieces:
            key = (p.src_port.name, p.dst_port.name)
            options = path_cache.get(key)
            if options is None:
                options = [(n, path_links(topo, n)) for n in live_paths(topo, p.src_port, p.dst_port)]
                path_cache[key] = options
            if not options:
                raise TopologyError(f"no live path {p.src_port.name} -> {p.dst_port.name}")
            best = min(options, key=lambda o: float(((load[o[1]] + p.bytes) * inv[o[1]]).max()))
            p.nodes, p.links = best[0], best[1]
            load[p.links] += p.bytes

    def _repair(self, plan: Plan, cap: np.ndarray, max_moves: int = 2000) -> None:
        """Move pieces off the busiest switch link while that lowers the max (unequal pieces, degraded links)."""
        topo = self.topo
        inv = np.where(cap > 0, 1.0 / np.where(cap > 0, cap, 1), np.inf)
        by_link: dict[int, list[Piece]] = defaultdict(list)
        for p in plan.pieces:
            for lid in p.links[1:-1]:
                by_link[lid].append(p)
        for _ in range(max_moves):
            with np.errstate(invalid="ignore"):
                util = plan.load * inv
            util[np.isnan(util)] = 0
            switch_links = list(by_link)
            if not switch_links:
                return
            worst = max(switch_links, key=lambda lid: util[lid])
            peak = util[worst]
            moved = False
            for p in sorted(by_link[worst], key=lambda x: -x.bytes):
                current = p.links
                plan.load[current] -= p.bytes
                best, best_peak = None, peak
                for nodes in live_paths(topo, p.src_port, p.dst_port):
                    links = path_links(topo, nodes)
                    new_peak = float(((plan.load[links] + p.bytes) * inv[links]).max())
                    if new_peak < best_peak - 1e-12:
                        best, best_peak = (nodes, links), new_peak
                if best is None:
                    plan.load[current] += p.bytes
                    continue
                for lid in current[1:-1]:
                    by_link[lid].remove(p)
                p.nodes, p.links = best
                plan.load[p.links] += p.bytes
                for lid in p.links[1:-1]:
                    by_link[lid].append(p)
                moved = True
                break
            if not moved:
                return

    # --- source ports -------------------------------------------------------------
    def _hasher(self, switch: str):
        h = self._hashers.get(switch)
        if h is None:
            h = self._hashers[switch] = switch_hash(switch, self.hash_kind, self.hash_seed)
        return h

    def sport_for(self, p: Piece) -> int:
        """A UDP source port the switches' hashes map onto the piece's chosen path."""
        from c4.traffic.hashing import FiveTuple

        topo = self.topo
        hops = []  # (switch, choices, wanted index)
        nodes = p.nodes
        for i in range(1, len(nodes) - 2):
            sw, nxt = nodes[i], nodes[i + 1]
            dst_leaf = p.dst_port.leaf
            key = (sw, dst_leaf)
            choices = self._choices.get(key)
            if choices is None:
                choices = self._choices[key] = sorted(topo.next_hops(sw, dst_leaf))
            if len(choices) > 1:
                hops.append((self._hasher(sw), len(choices), choices.index(nxt)))
        if not hops:
            return SPORT_MIN + (zlib.crc32(f"{p.flow}/{p.qp}".encode()) % (SPORT_MAX - SPORT_MIN + 1))
        start = SPORT_MIN + (zlib.crc32(f"{p.flow}/{p.qp}".encode()) % (SPORT_MAX - SPORT_MIN + 1))
        src_ip, dst_ip = p.src_port.ip, p.dst_port.ip
        for off in range(SPORT_MAX - SPORT_MIN + 1):
            sport = SPORT_MIN + (start - SPORT_MIN + off) % (SPORT_MAX - SPORT_MIN + 1)
            t = FiveTuple(src_ip, dst_ip, sport)
            if all(h.pick(t, n) == want for h, n, want in hops):
                return sport
        raise TopologyError(f"no source port realizes path {p.nodes}")

    # --- replanning -----------------------------------------------------------------
    def replan(self, plan: Plan) -> Plan:
        """After links changed state: move only pieces whose path or port is no longer usable; churn counted."""
        topo = self.topo
        self._choices.clear()  # live next hops changed
        cap = capacities(topo)
        moved = []
        for p in plan.pieces:
            if any(cap[lid] <= 0 for lid in p.links):
                plan.load[p.links] -= p.bytes
                moved.append(p)
        for p in moved:
            if not topo.live(p.src_port.name, p.src_port.leaf) or not topo.live(
                p.dst_port.leaf, p.dst_port.name
            ):
                f = plan.flows[p.flow]
                srcs = [x for x in topo.hosts[f.src].nics[f.src_nic] if topo.live(x.name, x.leaf)]
                dsts = [x for x in topo.hosts[f.dst].nics[f.dst_nic] if topo.live(x.leaf, x.name)]
                if not srcs or not dsts:
                    raise TopologyError(f"flow {f.src}->{f.dst}: every port of the NIC is down")
                p.src_port, p.dst_port = srcs[0], dsts[0]
        self._greedy(sorted(moved, key=lambda p: -p.bytes), plan.load, cap)
        for p in moved:
            p.sport = self.sport_for(p)
        plan.churn = len(moved)
        return plan
