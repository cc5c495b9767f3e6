"""Plans out: JSON for operators and the catalogue's `plans` table for the collector."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from c4.catalogue import load
from c4.traffic.planner import Plan


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
