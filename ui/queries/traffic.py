"""Traffic: stored C4P plans, link loads under the plan vs ECMP vs spraying, the plan's connections."""

from __future__ import annotations

from c4.ui.sql import lit

#: load / bound per routing: bytes over capacity is the link's drain time, the bound is the best possible.
OVER_BOUND = {
    routing: f"{routing}_bytes * 8 / nullif(capacity_gbps * 1e9, 0) / nullif(bound_s, 0)"
    for routing in ("plan", "ecmp", "spray")
}


def plans() -> str:
    """Every stored plan, newest first: its job and reason (plan_runs), pieces, connections, max load over the bound."""
    return """
WITH p AS (
    SELECT plan_id, max(ts) AS created, any_value(job) AS job, count(*) AS pieces,
           count(DISTINCT (src, dst, channel)) AS connections, max(max_load_over_bound) AS max_load_over_bound
    FROM plans GROUP BY plan_id),
l AS (SELECT plan_id, max(ts) AS created, count(*) AS links FROM plan_links GROUP BY plan_id),
r AS (SELECT plan_id, arg_max(job, ts) AS job, arg_max(reason, ts) AS reason FROM plan_runs GROUP BY plan_id)
SELECT plan_id, coalesce(p.created, l.created) AS created, coalesce(r.job, p.job) AS job, r.reason,
       p.pieces, p.connections, l.links, p.max_load_over_bound
FROM p FULL JOIN l USING (plan_id) LEFT JOIN r USING (plan_id) ORDER BY created DESC, plan_id
"""


def routing_summary(plan_id: str) -> str:
    """Max link load over the spraying bound for the plan, ECMP and spraying (1.0 = the bound), and ECMP's busiest
    link against the plan's busiest (``times``: the first over the second), with how many fabric links ECMP loads
    beyond the plan's busiest."""
    return f"""
WITH l AS (
    SELECT link, tier, bound_s, {OVER_BOUND["plan"]} AS plan, {OVER_BOUND["ecmp"]} AS ecmp,
           {OVER_BOUND["spray"]} AS spray
    FROM plan_links WHERE plan_id = {lit(plan_id)})
SELECT max(plan) AS plan, max(ecmp) AS ecmp, max(spray) AS spray, any_value(bound_s) AS bound_s, count(*) AS links,
       arg_max(link, (ecmp, link)) AS ecmp_link, arg_max(tier, (ecmp, link)) AS ecmp_tier,
       max(ecmp) / nullif(max(plan), 0) AS times,
       count(*) FILTER (WHERE tier IN ('fabric_up', 'fabric_down') AND ecmp > plan_max * (1 + 1e-9))
           AS fabric_overloaded
FROM (SELECT *, max(plan) OVER () AS plan_max FROM l)
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


def ecmp_overloads(plan_id: str, limit: int = 24) -> str:
    """Fabric links ECMP loads beyond the plan's busiest link, with the plan's load on each, worst first."""
    return f"""
WITH l AS (
    SELECT link, tier, capacity_gbps, ecmp_bytes, plan_bytes, {OVER_BOUND["ecmp"]} AS ecmp,
           {OVER_BOUND["plan"]} AS plan, max({OVER_BOUND["plan"]}) OVER () AS plan_max
    FROM plan_links WHERE plan_id = {lit(plan_id)})
SELECT link, tier, capacity_gbps, ecmp AS ecmp_over_bound, plan AS plan_over_bound,
       ecmp / nullif(plan_max, 0) AS ecmp_over_plan_max, ecmp_bytes / 1e6 AS ecmp_mbytes, plan_bytes / 1e6 AS plan_mbytes
FROM l WHERE tier IN ('fabric_up', 'fabric_down') AND ecmp > plan_max * (1 + 1e-9)
ORDER BY ecmp DESC, link LIMIT {int(limit)}
"""


def history(job: str) -> str:
    """A job's plans in the order they were made (plan_history): why, what they replaced, their load and time."""
    return f"""
SELECT created, plan_id, reason, fault_id, link, previous_plan_id, connections, pieces, moved_pieces,
       max_load_over_bound, ecmp_over_bound, bound_s, completion_s, applied
FROM plan_history WHERE job = {lit(job)}
ORDER BY created, plan_id
"""
