"""Plans out: the catalogue's `plans`, `plan_links` and `plan_runs` rows for the collector."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from c4.catalogue import load
from c4.traffic.fluid import FluidSim
from c4.traffic.planner import Plan
from c4.traffic.routing import (
    capacities,
    ecmp_subflows,
    loads_from_fractions,
    loads_from_subflows,
    lower_bound,
    max_utilization,
    spray_fractions,
)

#: The reasons a plan is made (plan_runs.reason): a job's first plan, an operator's `c4 plan`, a replan off
#: a link, a replan back onto a link that came back.
REASONS = ("initial", "manual", "link_down", "link_degraded", "link_vanished", "link_restored")

#: A piece's identity (src, dst, channel, qp) and its route (src_port, dst_port, switch path), as stored in `plans`.
PieceKey = tuple[str, str, int, int]
Route = tuple[str, str, str]


def plan_rows(plan: Plan, plan_id: str, over_bound: float, node: str = "") -> list[dict]:
    """One dict per piece, in the `plans` table's columns."""
    ts = datetime.now(UTC).replace(tzinfo=None)
    return [
        {
            "ts": ts,
            "node": node,
            "job": p.job,
            "plan_id": plan_id,
            "src": p.src,
            "dst": p.dst,
            "channel": p.channel,
            "qp": p.qp,
            "src_port": p.src_port.name,
            "dst_port": p.dst_port.name,
            "src_ip": p.src_port.ip,
            "dst_ip": p.dst_port.ip,
            "udp_sport": p.sport,
            "lag_port": p.src_port.port,
            "path": ">".join(p.nodes[1:-1]),
            "share_bytes": p.bytes,
            "max_load_over_bound": over_bound,
        }
        for p in plan.pieces
    ]


def plan_table(plan: Plan, plan_id: str, over_bound: float, node: str = "") -> pa.Table:
    """The plan as an Arrow table with exactly the `plans` schema."""
    return pa.Table.from_pylist(
        plan_rows(plan, plan_id, over_bound, node), schema=load()["plans"].arrow_schema
    )


def ecmp_loads(plan: Plan, ecmp_seeds: int = 5, first_seed: int = 0) -> list[np.ndarray]:
    """Bytes per link under ECMP hashing of the plan's flows, one array per hash seed (first_seed onwards)."""
    n = len(plan.topo.links)
    return [
        loads_from_subflows(n, ecmp_subflows(plan.topo, plan.flows, s))
        for s in range(first_seed, first_seed + max(1, ecmp_seeds))
    ]


def link_rows(
    plan: Plan, plan_id: str, ecmp_seeds: int = 5, node: str = "", first_seed: int = 0
) -> list[dict]:
    """One dict per directed link in the `plan_links` columns: plan vs ECMP (mean over seeds) vs spraying bytes."""

    topo, flows = plan.topo, plan.flows
    n = len(topo.links)
    ecmp = np.mean(ecmp_loads(plan, ecmp_seeds, first_seed), axis=0)
    spray = loads_from_fractions(n, spray_fractions(topo, flows))
    cap_gbps = capacities(topo) * 8 / 1e9
    bound = lower_bound(topo, flows)
    switches = set(topo.leaves) | set(topo.spines) | set(topo.cores)
    ts = datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for link in topo.links:
        if link.src not in switches:
            tier = "host_up"
        elif link.dst not in switches:
            tier = "host_down"
        elif link.src in topo.leaves or (link.src in topo.spines and link.dst in topo.cores):
            tier = "fabric_up"
        else:
            tier = "fabric_down"
        rows.append(
            {
                "ts": ts,
                "node": node,
                "job": plan.pieces[0].job if plan.pieces else "",
                "plan_id": plan_id,
                "link": link.name,
                "src": link.src,
                "dst": link.dst,
                "tier": tier,
                "capacity_gbps": float(cap_gbps[link.id]),
                "plan_bytes": float(plan.load[link.id]),
                "ecmp_bytes": float(ecmp[link.id]),
                "spray_bytes": float(spray[link.id]),
                "bound_s": bound,
            }
        )
    return rows


def link_table(
    plan: Plan, plan_id: str, ecmp_seeds: int = 5, node: str = "", first_seed: int = 0
) -> pa.Table:
    """The plan's link loads as an Arrow table with exactly the `plan_links` schema."""
    return pa.Table.from_pylist(
        link_rows(plan, plan_id, ecmp_seeds, node, first_seed), schema=load()["plan_links"].arrow_schema
    )


def piece_routes(plan: Plan) -> dict[PieceKey, Route]:
    """Every piece's route, keyed as in the `plans` table (take it before `Planner.replan`, which moves in place)."""
    return {
        (p.src, p.dst, p.channel, p.qp): (p.src_port.name, p.dst_port.name, ">".join(p.nodes[1:-1]))
        for p in plan.pieces
    }


def stored_routes(rows: Iterable[Mapping]) -> dict[PieceKey, Route]:
    """The routes of a stored plan from its `plans` rows (src, dst, channel, qp, src_port, dst_port, path)."""
    return {
        (r["src"], r["dst"], int(r["channel"]), int(r["qp"])): (r["src_port"], r["dst_port"], r["path"])
        for r in rows
    }


def moved_pieces(plan: Plan, previous: Mapping[PieceKey, Route]) -> int:
    """Pieces of the plan that are new or take another port or path than in the previous plan."""
    return sum(previous.get(k) != route for k, route in piece_routes(plan).items())


def plan_run_row(
    plan: Plan,
    plan_id: str,
    job: str,
    reason: str,
    *,
    previous_plan_id: str = "",
    previous_routes: Mapping[PieceKey, Route] | None = None,
    fault_id: str = "",
    link: str = "",
    applied: str = "",
    ecmp_seeds: int = 5,
    first_seed: int = 0,
    node: str = "",
) -> dict:
    """The `plan_runs` row of a plan: why it was made, what it replaces, its pieces and its load.

    Loads are over the spraying bound of the plan's own fabric (its links' states when planned);
    ECMP is the mean over ``ecmp_seeds`` hash seeds from ``first_seed`` of each seed's busiest link;
    completion is the max-min fluid time of one collective under the plan. ``moved_pieces`` counts
    the pieces whose route differs from ``previous_routes`` (0 without them).
    """
    if reason not in REASONS:
        raise ValueError(f"plan_runs reason {reason!r}: expected one of {', '.join(REASONS)}")
    topo, flows = plan.topo, plan.flows
    cap = capacities(topo)
    bound = lower_bound(topo, flows) if flows else 0.0
    ecmp = (
        [max_utilization(load, cap) for load in ecmp_loads(plan, ecmp_seeds, first_seed)] if flows else [0.0]
    )
    completion = FluidSim(cap, plan.subflows()).completion_time() if plan.pieces else 0.0
    return {
        "ts": datetime.now(UTC).replace(tzinfo=None),
        "node": node,
        "job": job,
        "plan_id": plan_id,
        "reason": reason,
        "fault_id": fault_id,
        "link": link,
        "previous_plan_id": previous_plan_id,
        "connections": len(flows),
        "pieces": len(plan.pieces),
        "moved_pieces": moved_pieces(plan, previous_routes) if previous_routes is not None else 0,
        "max_load_over_bound": plan.max_utilization() / bound if bound else None,
        "ecmp_over_bound": float(np.mean(ecmp)) / bound if bound else None,
        "bound_s": bound,
        "completion_s": completion,
        "applied": applied,
    }


def plan_run_table(*rows: dict) -> pa.Table:
    """`plan_run_row` dicts as an Arrow table with exactly the `plan_runs` schema."""
    return pa.Table.from_pylist(list(rows), schema=load()["plan_runs"].arrow_schema)
