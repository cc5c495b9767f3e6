"""The NCCL settings a plan implies where NCCL only has a global knob (NCCL v2.30.7 docs/userguide/source/env.rst)."""

from __future__ import annotations

from collections import Counter

from c4.traffic.even_split import uneven_connections
from c4.traffic.planner import Plan


def qps_per_connection(plan: Plan) -> int:
    """Most pieces (QPs) the plan gives one connection: NCCL opens the same count on every connection."""
    per_flow = Counter(p.flow for p in plan.pieces)
    return max(per_flow.values(), default=1)


def nccl_env(plan: Plan, adaptive_routing: bool | None = None) -> dict[str, tuple[str, str]]:
    """Variable -> (value, expected effect) for the plan; adaptive routing only when the fabric's support is known."""
    qps = qps_per_connection(plan)
    out = {
        "NCCL_IB_QPS_PER_CONNECTION": (
            str(qps),
            f"{qps} QP(s) per connection (default 1, range 1-128): the plan's most pieces on one connection; "
            "under plain ECMP each QP hashes on its own source port, so more QPs spread a connection "
            "over more paths",
        ),
        "NCCL_IB_SPLIT_DATA_ON_QPS": (
            "1" if qps > 1 else "0",
            "1 = split every message evenly over the QPs (default 0 = "
            "round-robin whole messages over QPs since NCCL 2.20)"
            if qps > 1
            else "one QP per connection: nothing to split (default 0)",
        ),
    }
    if adaptive_routing is not None:
        out["NCCL_IB_ADAPTIVE_ROUTING"] = (
            "1" if adaptive_routing else "0",
            "1 = AR-capable transfers: the switches move packets off congested ports, so the plan's "
            "static paths become a starting point (default 1 on IB, 0 on RoCE; needs an AR-enabled SL, "
            "see NCCL_IB_SL)"
            if adaptive_routing
            else "0 = no adaptive routing: packets stay on the paths the source ports pick (the plan's model)",
        )
    return out


def nccl_env_file(plan: Plan, adaptive_routing: bool | None = None) -> str:
    """The env file: one ``export VAR=value`` per setting, each after a comment with its expected effect."""
    lines = ["# NCCL settings implied by the C4P plan (c4 plan --apply-as nccl-env); source before launch."]
    for var, (value, why) in nccl_env(plan, adaptive_routing).items():
        lines += [f"# {why}", f"export {var}={value}"]
    uneven = uneven_connections(plan)
    if uneven:
        lines.append(
            f"# WARNING: {len(uneven)} of {len(plan.flows)} connections have unequal pieces (the plan shifts bytes "
            "between NIC ports or QPs); stock NCCL splits evenly, so only a net plugin that weights its QPs "
            "carries them as planned"
        )
    if adaptive_routing is None:
        lines.append(
            "# NCCL_IB_ADAPTIVE_ROUTING left at NCCL's default: pass --adaptive-routing on|off if the fabric's support is known"
        )
    return "\n".join(lines) + "\n"
