"""C4P planner: every connection (or split piece) gets a NIC port, a path and a UDP source port, minimizing max link load."""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from c4.traffic.collectives import Flow
from c4.traffic.coloring import equitable_colouring
from c4.traffic.hashing import SPORT_MAX, SPORT_MIN, switch_hash
from c4.traffic.minmax_lp import min_max_fractions
from c4.traffic.routing import capacities, live_paths, lower_bound, path_links
from c4.traffic.splitting import Share, port_shares
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
    churn: int = 0  # pieces moved or created by the last replan
    added: int = 0  # pieces created (splits) by the last replan

    def max_utilization(self) -> float:
        """Seconds to drain the busiest link (bytes / capacity)."""
        cap = capacities(self.topo)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(cap > 0, self.load / np.where(cap > 0, cap, 1), np.where(self.load > 0, np.inf, 0))
        return float(u.max())

    def subflows(self) -> list[tuple[list[int], float]]:
        """(link ids, bytes) per piece, for the fluid simulator."""
        return [(p.links, p.bytes) for p in self.pieces]


class Options:
    """The live paths of one port pair as node lists, link-id lists and (equal lengths) one id matrix."""

    def __init__(self, nodes: list[list[str]], links: list[list[int]]) -> None:
        self.nodes = nodes
        self.links = links
        self.mat = np.array(links, dtype=np.int64) if len({len(lk) for lk in links}) == 1 else None

    def __len__(self) -> int:
        return len(self.nodes)

    def best(self, load: np.ndarray, inv: np.ndarray, size: float) -> tuple[int, float]:
        """(index, peak utilization) of the option with the lowest peak after adding size bytes, ties by sum."""
        if len(self.nodes) == 1:
            lk = self.links[0]
            return 0, float(((load[lk] + size) * inv[lk]).max())
        if self.mat is not None:
            u = (load[self.mat] + size) * inv[self.mat]
            peak = u.max(axis=1)
            cand = np.flatnonzero(peak <= peak.min() * (1 + 1e-12))
            i = int(cand[np.argmin(u[cand].sum(axis=1))]) if len(cand) > 1 else int(cand[0])
            return i, float(peak[i])
        costs = []
        for lk in self.links:
            u = (load[lk] + size) * inv[lk]
            costs.append((float(u.max()), float(u.sum())))
        i = min(range(len(costs)), key=costs.__getitem__)
        return i, costs[i][0]


#: the min-max LP runs only on plans with at most this many (connection, live path) columns: 8,192
#: (256 dual-plane connections x 32 paths, 6 uplinks down) took HiGHS 3.3 s on a shared 2-core host
LP_MAX_COLUMNS = 10000
#: ... and its plan replaces the greedy one only when it lowers the max link load by more than this
#: fraction: its unequal pieces and flat load (many links at the peak) can slow max-min fluid
#: completion, worth it for the dual-plane case it is for (load 1.172 -> 1.023 of the bound,
#: completion 1.367 -> 1.091), not for a fraction of a percent
LP_MIN_GAIN = 0.01

#: probed source ports: (src_ip, dst_ip) -> switch path (tuple of switch names) -> sports seen taking it
SportTable = dict[tuple[str, str], dict[tuple[str, ...], list[int]]]


class Planner:
    """Plans flows onto a topology with a global ledger (concurrent jobs share it)."""

    def __init__(
        self,
        topo: Topology,
        max_qps: int = 8,
        hash_kind: str = "crc32",
        hash_seed: int = 0,
        sport_table: SportTable | None = None,
    ) -> None:
        self.topo = topo
        self.max_qps = max_qps
        self.hash_kind = hash_kind
        self.hash_seed = hash_seed
        self.sport_table = sport_table
        self._hashers: dict[str, object] = {}
        self._choices: dict[tuple[str, str], list[str]] = {}
        self._pickers: dict[tuple, object] = {}
        self._reach: dict[tuple[str, str], bool] = {}

    # --- planning ---------------------------------------------------------------
    def plan(self, flows: list[Flow], sports: bool = True) -> Plan:
        """Route every flow: the lowest max link load first, then the fewest pieces; returns the plan with its ledger.

        Two split rules are tried, fewest pieces first: cuts that just reach the lower bound on
        every leaf, then cuts that balance every leaf evenly (the gcd rule: more pieces, but equal
        ones that colour exactly). The first plan at the bound wins, else the lower load.

        Both rules give each NIC port (plane) an equal share of a connection, fixed before the
        failure-aware load is known; with a failure on one plane the bytes must shift between
        planes, in unequal parts. So when a connection has more than one port pair and neither
        plan reaches the bound, the min-max LP over every live path is solved (small problems
        only) and its plan (unequal pieces, at most max_qps per connection) taken if it is lower
        by more than LP_MIN_GAIN. Not on single-port fabrics: there the LP lowered the peak of
        3_tier_fat_tree's ring shuffle 3 (1.125 -> 1.030) but its pieces (123 -> 207, unequal)
        finished later in the max-min fluid model (1.250 -> 1.302 of the bound).
        sports=False leaves the UDP source ports unset (0), for callers that only need the loads.
        """
        self._choices.clear()  # the fabric may have changed since the last plan
        self._pickers.clear()
        self._reach.clear()
        bound = lower_bound(self.topo, flows)
        pairs = [self._port_pairs(f) for f in flows]
        candidates = []
        for balanced in (False, True):
            shares = port_shares(self.topo, flows, pairs, self.max_qps, bound, balanced)
            count = sum(sh.pieces for fs in shares for sh in fs)
            if all(count != c for c, _ in candidates):
                candidates.append((count, shares))
        best: Plan | None = None
        for _, shares in sorted(candidates, key=lambda c: c[0]):
            plan = self._route_shares(flows, shares, bound)
            peak = plan.max_utilization()
            if best is None or peak < best.max_utilization() * (1 - 1e-9):
                best = plan
            if peak <= bound * (1 + 1e-9):
                break
        assert best is not None
        multi_port = any(len(p) > 1 for p in pairs)
        if multi_port and best.max_utilization() * (1 - LP_MIN_GAIN) > bound * (1 + 1e-9):
            lp = self._lp_plan(flows)
            if lp is not None and lp.max_utilization() < best.max_utilization() * (1 - LP_MIN_GAIN):
                best = lp
        if sports:
            for p in best.pieces:
                p.sport = self.sport_for(p)
        return best

    def _route_shares(self, flows: list[Flow], shares: list[list[Share]], bound_s: float = 0.0) -> Plan:
        """Cut every share into its pieces and route them: colouring on a uniform 2-tier fabric, else greedy; repair."""
        topo = self.topo
        cap = capacities(topo)
        load = np.zeros(len(topo.links))
        pieces: list[Piece] = []
        for i, (f, fs) in enumerate(zip(flows, shares, strict=True)):
            q = 0
            for sh in fs:
                for _ in range(sh.pieces):
                    pieces.append(
                        Piece(i, f.job, f.src, f.dst, f.channel, q, sh.bytes / sh.pieces, sh.src, sh.dst)
                    )
                    q += 1
        cross = [p for p in pieces if p.src_port.leaf != p.dst_port.leaf]
        local = [p for p in pieces if p.src_port.leaf == p.dst_port.leaf]
        for p in local:
            self._route(p, [p.src_port.name, p.src_port.leaf, p.dst_port.name], load)
        if topo.tiers == 2 and self._uniform_spines(cross):
            self._colour(cross, load)
        else:
            self._greedy(sorted(cross, key=lambda p: -p.bytes), load, cap)
        plan = Plan(topo, flows, pieces, load)
        self._repair(plan, cap, bound_s)
        return plan

    def _lp_plan(self, flows: list[Flow]) -> Plan | None:
        """The min-max LP's plan: each connection's fractions over its live paths as pieces (None if too large)."""
        topo = self.topo
        cap = capacities(topo)
        routes = []
        for f in flows:
            routes.append(
                [
                    (a, b, nodes, path_links(topo, nodes))
                    for a, b in self._port_pairs(f)
                    for nodes in live_paths(topo, a, b)
                ]
            )
        if sum(len(r) for r in routes) > LP_MAX_COLUMNS:
            return None
        limits = [max(self.max_qps, len(topo.hosts[f.src].nics[f.src_nic])) for f in flows]
        fractions = min_max_fractions(
            [f.bytes for f in flows], [[r[3] for r in rs] for rs in routes], cap, min(limits)
        )
        load = np.zeros(len(topo.links))
        pieces: list[Piece] = []
        for i, (f, rs, x) in enumerate(zip(flows, routes, fractions, strict=True)):
            for q, j in enumerate(np.flatnonzero(x)):
                a, b, nodes, links = rs[j]
                pieces.append(
                    Piece(i, f.job, f.src, f.dst, f.channel, q, f.bytes * float(x[j]), a, b, nodes, links)
                )
                load[links] += pieces[-1].bytes
        return Plan(topo, flows, pieces, load)

    def shares(
        self, flows: list[Flow], bound_s: float | None = None, balanced: bool = False
    ) -> list[list[Share]]:
        """Per flow, its bytes per port pair (plane) and the fewest pieces each share needs to reach the bound."""
        pairs = [self._port_pairs(f) for f in flows]
        if bound_s is None:
            bound_s = lower_bound(self.topo, flows)
        return port_shares(self.topo, flows, pairs, self.max_qps, bound_s, balanced)

    def _reachable(self, a: NicPort, b: NicPort) -> bool:
        """Some live switch path joins the two ports' leaves (cached per leaf pair)."""
        key = (a.leaf, b.leaf)
        ok = self._reach.get(key)
        if ok is None:
            topo = self.topo
            ok = self._reach[key] = any(
                all(topo.live(x, y) for x, y in zip(mid, mid[1:], strict=False))
                for mid in topo.spine_paths(a.leaf, b.leaf)
            )
        return ok

    def _port_pairs(self, f: Flow) -> list[tuple[NicPort, NicPort]]:
        """Live, connected (source port, destination port) pairs of a connection: same port index (plane) first."""
        topo = self.topo
        srcs = [x for x in topo.hosts[f.src].nics[f.src_nic] if topo.live(x.name, x.leaf)]
        dsts = [x for x in topo.hosts[f.dst].nics[f.dst_nic] if topo.live(x.leaf, x.name)]
        if not srcs or not dsts:
            raise TopologyError(f"connection {f.src}->{f.dst} nic {f.src_nic}: no live NIC port")
        pairs = [(a, b) for a in srcs for b in dsts if self._reachable(a, b)]
        same = [(a, b) for a, b in pairs if a.port == b.port]
        if same:
            return same
        if not pairs:
            raise TopologyError(f"connection {f.src}->{f.dst} nic {f.src_nic}: no live port pair with a path")
        return pairs

    def _assign_ports(self, pieces: list[Piece], flows: list[Flow], port_bytes: dict[str, float]) -> None:
        """Balance pieces over the ports (planes) of each NIC, by bytes sent and received per port."""
        pairs_of: dict[int, list[tuple[NicPort, NicPort]]] = {}
        for p in pieces:
            pairs = pairs_of.get(p.flow)
            if pairs is None:
                pairs = pairs_of[p.flow] = self._port_pairs(flows[p.flow])
            if len(pairs) == 1:
                a, b = pairs[0]
            else:
                a, b = min(pairs, key=lambda ab: port_bytes[ab[0].name] + port_bytes[ab[1].name + "#rx"])
            p.src_port, p.dst_port = a, b
            port_bytes[a.name] += p.bytes
            port_bytes[b.name + "#rx"] += p.bytes

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

    def _options(self, p: Piece, cache: dict) -> Options:
        """Live path options of a piece, cached per port pair."""
        key = (p.src_port.name, p.dst_port.name)
        options = cache.get(key)
        if options is None:
            paths = live_paths(self.topo, p.src_port, p.dst_port)
            if not paths:
                raise TopologyError(f"no live path {p.src_port.name} -> {p.dst_port.name}")
            options = cache[key] = Options(paths, [path_links(self.topo, n) for n in paths])
        return options

    @staticmethod
    def _place(p: Piece, options: Options, load: np.ndarray, inv: np.ndarray) -> None:
        """Put a piece on the option with the lowest resulting peak (then the lowest summed load)."""
        i = options.best(load, inv, p.bytes)[0]
        p.nodes, p.links = options.nodes[i], options.links[i]
        load[p.links] += p.bytes

    def _greedy(self, pieces: list[Piece], load: np.ndarray, cap: np.ndarray) -> None:
        """Least-loaded path per piece (largest first), for failures, oversubscription and 3 tiers."""
        inv = np.where(cap > 0, 1.0 / np.where(cap > 0, cap, 1), np.inf)
        cache: dict = {}
        for p in pieces:
            self._place(p, self._options(p, cache), load, inv)

    def _repair(self, plan: Plan, cap: np.ndarray, bound_s: float = 0.0, max_moves: int = 2000) -> None:
        """Move pieces off the busiest link (to another path or NIC port) while that lowers its load.

        Catches what the structured steps cannot: unequal pieces, degraded links, dual-homed NICs
        whose two leaves differ in uplink capacity. When no whole piece can move, part of one
        (of a connection with QPs to spare) moves. Stops at the lower bound bound_s (seconds),
        or when the busiest link stopped falling.
        """
        inv = np.where(cap > 0, 1.0 / np.where(cap > 0, cap, 1), np.inf)
        by_link: dict[int, list[Piece]] = defaultdict(list)
        count: dict[int, int] = defaultdict(int)
        next_qp: dict[int, int] = defaultdict(int)
        for p in plan.pieces:
            count[p.flow] += 1
            next_qp[p.flow] = max(next_qp[p.flow], p.qp + 1)
            for lid in p.links:
                by_link[lid].append(p)
        cache: dict = {}
        pairs_of: dict[int, list[tuple[NicPort, NicPort]]] = {}

        def all_options(p: Piece) -> list[tuple[NicPort, NicPort, list[str], list[int]]]:
            pairs = pairs_of.get(p.flow)
            if pairs is None:
                pairs = pairs_of[p.flow] = self._port_pairs(plan.flows[p.flow])
            out = []
            for a, b in pairs:
                key = (a.name, b.name)
                options = cache.get(key)
                if options is None:
                    options = cache[key] = [
                        (n, path_links(self.topo, n)) for n in live_paths(self.topo, a, b)
                    ]
                out += [(a, b, nodes, links) for nodes, links in options]
            return out

        def best_option(p: Piece, size: float, peak: float):
            best, best_peak = None, peak
            for a, b, nodes, links in all_options(p):
                new_peak = float(((plan.load[links] + size) * inv[links]).max())
                if new_peak < best_peak - 1e-12:
                    best, best_peak = (a, b, nodes, links), new_peak
            return best

        record, stale, patience = (
            np.inf,
            0,
            50,
        )  # lowest busiest-link load, moves since it fell 0.1%, allowance
        for _ in range(max_moves):
            with np.errstate(invalid="ignore"):
                util = plan.load * inv
            util[np.isnan(util)] = 0
            if not by_link:
                return
            worst = max(by_link, key=lambda lid: util[lid])
            peak = util[worst]
            if peak <= bound_s * (1 + 1e-9):
                return
            if peak < record * (1 - 1e-3):
                # a plateau of n links at the peak takes about n moves to lower
                record, stale, patience = peak, 0, int((util >= peak * (1 - 1e-9)).sum()) + 20
            else:
                stale += 1
                if stale > patience:
                    return
            moved = False
            on_worst = sorted(by_link[worst], key=lambda x: -x.bytes)
            for p in on_worst:
                plan.load[p.links] -= p.bytes
                best = best_option(p, p.bytes, peak)
                if best is None:
                    plan.load[p.links] += p.bytes
                    continue
                for lid in p.links:
                    by_link[lid].remove(p)
                p.src_port, p.dst_port, p.nodes, p.links = best
                plan.load[p.links] += p.bytes
                for lid in p.links:
                    by_link[lid].append(p)
                moved = True
                break
            if not moved:
                moved = self._split_off_worst(
                    plan, worst, on_worst, inv, count, next_qp, by_link, all_options
                )
            if not moved:
                return

    def _split_off_worst(self, plan, worst, on_worst, inv, count, next_qp, by_link, all_options) -> bool:
        """Move part of a piece on the busiest link (one with QPs to spare) to the path that levels them best.

        The part is the amount that brings the busiest link and the most loaded new link of the
        other path to the same utilization (at most the whole piece, at least a sixteenth of it).
        """
        with np.errstate(invalid="ignore"):
            util = plan.load * inv
        util[np.isnan(util)] = 0
        peak = float(util[worst])
        for p in on_worst:
            limit = max(self.max_qps, len(self.topo.hosts[p.src].nics[plan.flows[p.flow].src_nic]))
            if count[p.flow] >= limit:
                continue
            here = set(p.links)
            best, best_size, best_peak = None, 0.0, peak
            for a, b, nodes, links in all_options(p):
                new = [e for e in links if e not in here]
                if not new:
                    continue
                size = min(
                    p.bytes,
                    min((peak - util[e]) / (inv[worst] + inv[e]) for e in new),
                )
                if size < p.bytes / 16:
                    continue
                after = max(peak - size * inv[worst], max(util[e] + size * inv[e] for e in new))
                if after < best_peak - 1e-12:
                    best, best_size, best_peak = (a, b, nodes, links), size, after
            if best is None:
                continue
            a, b, nodes, links = best
            if best_size >= p.bytes * (1 - 1e-12):  # the whole piece: a move, not a split
                plan.load[p.links] -= p.bytes
                for lid in p.links:
                    by_link[lid].remove(p)
                p.src_port, p.dst_port, p.nodes, p.links = a, b, nodes, links
                plan.load[links] += p.bytes
                for lid in links:
                    by_link[lid].append(p)
                return True
            p.bytes -= best_size
            plan.load[p.links] -= best_size
            q = Piece(p.flow, p.job, p.src, p.dst, p.channel, next_qp[p.flow], best_size, a, b, nodes, links)
            next_qp[p.flow] += 1
            count[p.flow] += 1
            plan.pieces.append(q)
            plan.load[links] += best_size
            for lid in links:
                by_link[lid].append(q)
            return True
        return False

    # --- source ports -------------------------------------------------------------
    def _hasher(self, switch: str):
        h = self._hashers.get(switch)
        if h is None:
            h = self._hashers[switch] = switch_hash(switch, self.hash_kind, self.hash_seed)
        return h

    def _next_choices(self, sw: str, dst_leaf: str) -> list[str]:
        key = (sw, dst_leaf)
        choices = self._choices.get(key)
        if choices is None:
            choices = self._choices[key] = sorted(self.topo.next_hops(sw, dst_leaf))
        return choices

    def sport_for(self, p: Piece) -> int:
        """A UDP source port the switches' hashes map onto the piece's path (or a probed one that took it)."""
        src_ip, dst_ip = p.src_port.ip, p.dst_port.ip
        span = SPORT_MAX - SPORT_MIN + 1
        start = zlib.crc32(f"{p.job}/{p.flow}/{p.qp}".encode()) % span
        if self.sport_table is not None:
            probed = self.sport_table.get((src_ip, dst_ip), {}).get(tuple(p.nodes[1:-1]))
            if probed:
                return probed[start % len(probed)]
        hops = []  # sport -> choice functions with the wanted choice
        nodes = p.nodes
        for i in range(1, len(nodes) - 2):
            choices = self._next_choices(nodes[i], p.dst_port.leaf)
            if len(choices) > 1:
                key = (src_ip, dst_ip, nodes[i], len(choices))
                picker = self._pickers.get(key)
                if picker is None:
                    picker = self._pickers[key] = self._hasher(nodes[i]).sport_picker(
                        src_ip, dst_ip, len(choices)
                    )
                hops.append((picker, choices.index(nodes[i + 1])))
        if not hops:
            return SPORT_MIN + start
        for off in range(span):
            sport = SPORT_MIN + (start + off) % span
            for picker, want in hops:
                if picker(sport) != want:
                    break
            else:
                return sport
        raise TopologyError(f"no source port realizes path {'>'.join(p.nodes)}")

    # --- replanning -----------------------------------------------------------------
    def replan(self, plan: Plan) -> Plan:
        """After links changed state: move only the pieces on dead links; churn counted.

        A moved piece goes whole onto the least-loaded live path when that keeps the busiest link
        where it is; otherwise it is split (up to the connection's max QPs) over the least-loaded
        live paths, as the gcd rule would have split it on the reduced fabric.
        """
        topo = self.topo
        self._choices.clear()  # live next hops changed
        self._pickers.clear()
        self._reach.clear()
        cap = capacities(topo)
        inv = np.where(cap > 0, 1.0 / np.where(cap > 0, cap, 1), np.inf)
        dead = set(np.flatnonzero(cap <= 0).tolist())
        affected = [p for p in plan.pieces if not dead.isdisjoint(p.links)]
        if not affected:
            plan.churn = 0
            return plan
        flows_hit = {p.flow for p in affected}
        per_flow: dict[int, int] = defaultdict(int)
        next_qp: dict[int, int] = defaultdict(int)
        for p in plan.pieces:
            if p.flow in flows_hit:
                per_flow[p.flow] += 1
                next_qp[p.flow] = max(next_qp[p.flow], p.qp + 1)
        for p in affected:
            plan.load[p.links] -= p.bytes
        with np.errstate(invalid="ignore"):
            util = plan.load * inv
        util[~np.isfinite(util)] = 0
        target = float(util.max()) if len(util) else 0.0
        port_bytes: dict[str, float] = defaultdict(float)
        path_cache: dict[tuple[str, str], list[tuple[list[str], list[int]]]] = {}
        added: list[Piece] = []
        for p in sorted(affected, key=lambda x: -x.bytes):
            f = plan.flows[p.flow]
            if not (
                topo.live(p.src_port.name, p.src_port.leaf)
                and topo.live(p.dst_port.leaf, p.dst_port.name)
                and self._reachable(p.src_port, p.dst_port)
            ):
                self._assign_ports([p], plan.flows, port_bytes)
            options = self._options(p, path_cache)
            whole_peak = options.best(plan.load, inv, p.bytes)[1]
            budget = max(self.max_qps, f.qps) - per_flow[p.flow] + 1
            m = min(budget, len(options))
            if whole_peak <= target * (1 + 1e-9) or m <= 1:
                self._place(p, options, plan.load, inv)
                continue
            p.bytes /= m
            subs = [p]
            for _ in range(m - 1):
                q = Piece(
                    p.flow, p.job, p.src, p.dst, p.channel, next_qp[p.flow], p.bytes, p.src_port, p.dst_port
                )
                next_qp[p.flow] += 1
                subs.append(q)
            per_flow[p.flow] += m - 1
            added.extend(subs[1:])
            for q in subs:
                self._place(q, options, plan.load, inv)
        plan.pieces.extend(added)
        for p in affected:
            p.sport = self.sport_for(p)
        for p in added:
            p.sport = self.sport_for(p)
        plan.churn = len(affected) + len(added)
        plan.added = len(added)
        return plan


def split_counts(topo: Topology, flows: list[Flow], max_qps: int) -> list[int]:
    """Pieces per flow: the sum over its port pairs of the fewest pieces that can reach the bound."""
    return [sum(sh.pieces for sh in shares) for shares in Planner(topo, max_qps=max_qps).shares(flows)]
