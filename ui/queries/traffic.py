"""Traffic: stored C4P plans, link loads under the plan vs ECMP vs spraying, the plan's connections."""

from __future__ import annotations

from c4.ui.sql import lit

#: load / bound per routing: bytes over capacity is the link's drain time, the bound is the best possible.
OVER_BOUND = {
    routing: f"{routing}_bytes * 8 / nullif(capacity_gbps * 1e9, 0) / nullif(bound_s, 0)"
    for routing in ("plan", "ecmp", "spray")
}


def plans() -> str:
    """Every stored plan, newest first: pieces, connections and max load over the bound."""
    return """
WITH p AS (
    SELECT plan_id, max(ts) AS created, any_value(job) AS job, count(*) AS pieces,
           count(DISTINCT (src, dst, channel)) AS connections, max(max_load_over_bound) AS max_load_over_bound
    FROM plans GROUP BY plan_id),
l AS (SELECT plan_id, max(ts) AS created, count(*) AS links FROM plan_links GROUP BY plan_id)
SELECT plan_id, coalesce(p.created, l.created) AS created, p.job, p.pieces, p.connections, l.links,
       p.max_load_over_bound
FROM p FULL JOIN l USING (plan_id) ORDER BY created DESC
"""


def routing_summary(plan_id: str) -> str:
    """Max link load over the spraying bound for the plan, ECMP and spraying (1.0 = the bound)."""
    return f"""
SELECT max({OVER_BOUND["plan"]}) AS plan, max({OVER_BOUND["ecmp"]}) AS ecmp, max({OVER_BOUND["spray"]}) AS spray,
       any_value(bound_s) AS bound_s, count(*) AS links
FROM plan_links WHERE plan_id = {lit(plan_id)}
"""


def link_loads(plan_id: str) -> str:
    """Every directed link of the plan with its load over the bound under each routing, busiest first."""
    return f"""
SELECT link, src, dst, tier, capacity_gbps, plan_bytes, ecmp_bytes, spray_bytes,
       {OVER_BOUND["plan"]} AS plan, {OVER_BOUND["ecmp"]} AS ecmp, {OVER_BOUND["spray"]} AS spray
FROM plan_links WHERE plan_id = {lit(plan_id)}
ORDER BY greatest(plan, ecmp) DESC NULLS LAST, link
"""


def fabric(plan_id: str) -> str:
    """Switch-level fabric: each switch pair's busiest direction, and each leaf's busiest host link, per routing."""
    return f"""
WITH l AS ({link_loads(plan_id)})
SELECT 'switch' AS kind, least(src, dst) AS a, greatest(src, dst) AS b,
       max(plan) AS plan, max(ecmp) AS ecmp, max(spray) AS spray, sum(capacity_gbps) / 2 AS capacity_gbps
FROM l WHERE tier IN ('fabric_up', 'fabric_down') GROUP BY a, b
UNION ALL
SELECT 'hosts', CASE WHEN tier = 'host_up' THEN dst ELSE src END AS a, 'hosts' AS b,
       max(plan), max(ecmp), max(spray), sum(capacity_gbps) / 2
FROM l WHERE tier IN ('host_up', 'host_down') GROUP BY a
ORDER BY kind DESC, a, b
"""


def connections(plan_id: str, limit: int = 2000) -> str:
    """The plan per connection: its QPs with NIC ports, UDP source ports and switch paths."""
    return f"""
SELECT src, dst, channel, count(*) AS qps, sum(share_bytes) / 1e6 AS mbytes,
       string_agg(DISTINCT src_port, ', ') AS src_ports, string_agg(DISTINCT dst_port, ', ') AS dst_ports,
       string_agg(CAST(udp_sport AS VARCHAR), ', ' ORDER BY qp) AS udp_sports,
       string_agg(path, ' | ' ORDER BY qp) AS paths
FROM plans WHERE plan_id = {lit(plan_id)}
GROUP BY src, dst, channel ORDER BY src, dst, channel LIMIT {int(limit)}
"""


def degraded_links(plan_id: str) -> str:
    """Links planned with less capacity than the best link of their tier (degraded or down when planned)."""
    return f"""
SELECT link, tier, capacity_gbps, max(capacity_gbps) OVER (PARTITION BY tier) AS nominal_gbps,
       plan_bytes / 1e6 AS plan_mbytes, ecmp_bytes / 1e6 AS ecmp_mbytes
FROM plan_links WHERE plan_id = {lit(plan_id)}
QUALIFY capacity_gbps < max(capacity_gbps) OVER (PARTITION BY tier)
ORDER BY capacity_gbps, link
"""
