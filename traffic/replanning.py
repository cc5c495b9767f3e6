"""Replanning a stored plan on the fabric as it is now: the plan back from its `plans` rows, the new plan
(moving only the pieces on dead links, or planning afresh where that loads the busiest link less), and
what it changed and costs."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from c4.traffic.collectives import Flow
from c4.traffic.export import PieceKey, Route, moved_pieces, stored_routes
from c4.traffic.fluid import FluidSim
from c4.traffic.planner import Piece, Plan, Planner
from c4.traffic.routing import capacities, lower_bound, path_links
from c4.traffic.topology import Topology, TopologyError

#: Default share above the lowest busiest-link load within which the replan moving fewest pieces wins.
LOAD_SLACK = 0.05


def port_index(port_name: str) -> tuple[str, int, int]:
    """A NIC port's name 'host/nic<i>p<j>' -> (host, i, j)."""
    host, _, rest = port_name.rpartition("/")
    nic, _, port = rest.removeprefix("nic").partition("p")
    return host, int(nic), int(port)


def plan_from_rows(topo: Topology, rows: list[dict[str, Any]]) -> Plan:
    """A stored plan (its `plans` rows) on ``topo``: one flow per connection (its bytes the sum of its
    pieces', its QPs their count), each piece on its stored path. Raises TopologyError when a port or
    hop is not in the fabric."""
    if not rows:
        raise TopologyError("a plan without pieces")
    by_conn: dict[tuple[str, str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_conn[(r["job"], r["src"], r["dst"], int(r["channel"]))].append(r)
    ports = {p.name: p for p in topo.ports()}
    flows: list[Flow] = []
    pieces: list[Piece] = []
    load = np.zeros(len(topo.links))
    for i, ((job, src, dst, channel), rs) in enumerate(sorted(by_conn.items())):
        first = rs[0]
        flows.append(
            Flow(
                job,
                src,
                dst,
                port_index(first["src_port"])[1],
                port_index(first["dst_port"])[1],
                channel,
                float(sum(r["share_bytes"] for r in rs)),
                len(rs),
            )
        )
        for r in sorted(rs, key=lambda x: x["qp"]):
            a, b = ports.get(r["src_port"]), ports.get(r["dst_port"])
            if a is None or b is None:
                raise TopologyError(
                    f"plan piece {src}->{dst} ch {channel}: port {r['src_port']} or {r['dst_port']} not in the fabric"
                )
            nodes = [a.name, *(h for h in (r["path"] or "").split(">") if h), b.name]
            links = path_links(topo, nodes)
            load[links] += r["share_bytes"]
            pieces.append(
                Piece(
                    i,
                    job,
                    src,
                    dst,
                    channel,
                    int(r["qp"]),
                    float(r["share_bytes"]),
                    a,
                    b,
                    nodes,
                    links,
                    int(r["udp_sport"]),
                )
            )
    return Plan(topo, flows, pieces, load)


@dataclass
class Replan:
    """A new plan for one job and what it is worth beside the old one on the same fabric."""

    plan: Plan
    moved_pieces: int
    bound_s: float
    max_load_over_bound: float
    old_max_load_over_bound: float  # the previous plan on the fabric as it is now
    completion_s: float
    old_completion_s: float
    how: str  # moved (only pieces on dead links moved) | fresh (planned anew)
    previous_routes: dict[PieceKey, Route]  # the old plan's pieces, as export.moved_pieces compares them


def _over(load_s: float, bound_s: float) -> float:
    return load_s / bound_s if bound_s > 0 else 0.0


def completion_s(plan: Plan) -> float:
    """Fluid completion time of one collective under the plan on its fabric (rates recomputed as pieces end)."""
    return FluidSim(capacities(plan.topo), plan.subflows()).completion_time()


def replan(
    topo: Topology, rows: list[dict[str, Any]], max_qps: int = 8, load_slack: float = LOAD_SLACK
) -> Replan:
    """Replan a stored plan on ``topo`` (links already set down or degraded).

    Candidates: the old plan with only the pieces on dead links moved (Planner.replan; a degraded link
    moves nothing there), and fresh plans allowing as many QPs per connection as the old plan used,
    twice that, ... up to ``max_qps``. Of those within ``load_slack`` of the lowest busiest-link load,
    the one moving fewest pieces wins (re-pinning a running job's QPs costs), then the fewest pieces.
    """
    old = plan_from_rows(topo, rows)
    before = stored_routes(rows)
    bound = lower_bound(topo, old.flows)
    old_load = old.max_utilization()
    candidates: list[tuple[Plan, str]] = []
    if capacities(topo)[np.unique([lid for p in old.pieces for lid in p.links])].min() <= 0:
        moved = plan_from_rows(topo, rows)
        Planner(topo, max_qps=max(max_qps, max(f.qps for f in moved.flows))).replan(moved)
        candidates.append((moved, "moved"))
    qps = min(max(f.qps for f in old.flows), max_qps)
    while True:  # as many QPs as the old plan used, doubled up to max_qps
        candidates.append((Planner(topo, max_qps=qps).plan(old.flows), "fresh"))
        if qps >= max_qps:
            break
        qps = min(2 * qps, max_qps)
    best = min(c.max_utilization() for c, _ in candidates)
    eligible = [
        (moved_pieces(c, before), len(c.pieces), i)
        for i, (c, _) in enumerate(candidates)
        if c.max_utilization() <= best * (1 + load_slack)
    ]
    n_moved, _, i = min(eligible)
    new, how = candidates[i]
    return Replan(
        new,
        n_moved,
        bound,
        _over(new.max_utilization(), bound),
        _over(old_load, bound),
        completion_s(new),
        completion_s(old),
        how,
        before,
    )


def degraded_rate_gbps(
    nominal_gbps: float, throughput_ratio: float, plan_bytes: float, completion_s_before: float
) -> float:
    """A switch cable's rate now, from C4D's finding: the connections crossing it run at
    ``throughput_ratio`` of their peers, so it carries what it carried under the plan
    (``plan_bytes`` per collective, which took ``completion_s_before``) that much slower."""
    if completion_s_before <= 0 or plan_bytes <= 0:
        return nominal_gbps * throughput_ratio
    carried_gbps = plan_bytes * 8 / 1e9 / completion_s_before
    return max(1e-3, min(nominal_gbps, carried_gbps) * throughput_ratio)
