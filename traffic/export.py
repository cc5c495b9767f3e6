"""Plans out: JSON for operators and the catalogue's `plans` table for the collector."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from c4.catalogue import load
from c4.traffic.planner import Plan
from c4.traffic.routing import (
    capacities,
    ecmp_subflows,
    loads_from_fractions,
    loads_from_subflows,
    lower_bound,
    spray_fractions,
)


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


def link_rows(plan: Plan, plan_id: str, ecmp_seeds: int = 5, node: str = "") -> list[dict]:
    """One dict per directed link in the `plan_links` columns: plan vs ECMP vs spraying bytes and the bound."""

    topo, flows = plan.topo, plan.flows
    n = len(topo.links)
    ecmp = np.mean(
        [loads_from_subflows(n, ecmp_subflows(topo, flows, s)) for s in range(max(1, ecmp_seeds))], axis=0
    )
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


def link_table(plan: Plan, plan_id: str, ecmp_seeds: int = 5, node: str = "") -> pa.Table:
    """The plan's link loads as an Arrow table with exactly the `plan_links` schema."""
    return pa.Table.from_pylist(
        link_rows(plan, plan_id, ecmp_seeds, node), schema=load()["plan_links"].arrow_schema
    )
