"""Overview: the node x component health grid, open faults by class, utilization and bus bandwidth, jobs."""

from __future__ import annotations

from c4.ui.sql import (
    ACTIVE_STATES,
    LATEST_FAULTS,
    bucket_s,
    combined_mean,
    in_list,
    newest,
    node_order,
    resolution_for,
    rollup_bucket_s,
    rollup_rows,
    severity_sql,
    since_newest,
)

#: Components count as present when seen within this many seconds of the newest sample.
INVENTORY_WINDOW_S = 300.0


def inventory_counts() -> str:
    """Nodes, GPUs and NIC ports seen recently, the newest sample time and the active faults."""
    gw = since_newest("gpu_samples", INVENTORY_WINDOW_S)
    pw = since_newest("ib_port_samples", INVENTORY_WINDOW_S)
    return f"""
WITH g AS (SELECT DISTINCT node, gpu_index FROM gpu_samples WHERE {gw}),
     p AS (SELECT DISTINCT node, device, port FROM ib_port_samples WHERE {pw}),
     f AS ({LATEST_FAULTS})
SELECT (SELECT count(DISTINCT node) FROM (SELECT node FROM g UNION ALL SELECT node FROM p)) AS nodes,
       (SELECT count(*) FROM g) AS gpus,
       (SELECT count(*) FROM p) AS nic_ports,
       (SELECT count(*) FROM f WHERE state IN {in_list(ACTIVE_STATES)}) AS active_faults,
       {newest("gpu_samples")} AS newest_gpu_sample,
       {newest("ib_port_samples")} AS newest_port_sample
"""


def health_grid() -> str:
    """One row per (node, component) with the worst active fault on it (severity 0 = healthy)."""
    gw = since_newest("gpu_samples", INVENTORY_WINDOW_S)
    pw = since_newest("ib_port_samples", INVENTORY_WINDOW_S)
    sev = severity_sql()
    # the distinct components first (millions of rows, two narrow columns), their names and positions after
    # (thousands): naming every raw row cost more than the scan
    return f"""
WITH gpus AS (SELECT DISTINCT node, gpu_index FROM gpu_samples WHERE {gw}),
ports AS (SELECT DISTINCT node, device, port FROM ib_port_samples WHERE {pw}),
inv AS (
    SELECT node, 'gpu' || gpu_index AS component, 'GPU' AS kind, gpu_index AS pos FROM gpus
    UNION
    SELECT node, device || 'p' || port, 'NIC port', 100 + TRY_CAST(regexp_extract(device, '(\\d+)$') AS INTEGER) * 4 + port
    FROM ports),
nodes AS (SELECT DISTINCT node FROM inv),
cells AS (SELECT * FROM inv UNION ALL SELECT node, 'node', 'node', -1 FROM nodes),
active AS (SELECT * FROM ({LATEST_FAULTS}) WHERE state IN {in_list(ACTIVE_STATES)}),
hit AS (
    SELECT split_part(c, '/', 1) AS node,
           coalesce(nullif(split_part(c, '/', 2), ''), 'node') AS component,
           fault_class, {sev} AS severity, summary, state
    FROM (SELECT unnest(string_split(component, '<->')) AS c, * EXCLUDE (component) FROM active)),
worst AS (
    SELECT node, component, max(severity) AS severity, arg_max(fault_class, severity) AS fault_class,
           arg_max(summary, severity) AS summary, count(*) AS faults, bool_and(state = 'acknowledged') AS acknowledged
    FROM hit GROUP BY node, component)
SELECT c.node, c.component, c.kind, c.pos, {node_order("c.node")} AS node_pos,
       coalesce(w.severity, 0) AS severity, coalesce(w.fault_class, 'healthy') AS status,
       coalesce(w.summary, '') AS summary, coalesce(w.faults, 0) AS faults, coalesce(w.acknowledged, false) AS acknowledged
FROM cells c LEFT JOIN worst w USING (node, component)
ORDER BY node_pos, c.node, c.pos
"""


def faults_by_class() -> str:
    """Active faults counted by class and state."""
    return f"""
SELECT fault_class, state, count(*) AS faults, max({severity_sql()}) AS severity
FROM ({LATEST_FAULTS}) WHERE state IN {in_list(ACTIVE_STATES)}
GROUP BY fault_class, state ORDER BY severity DESC, faults DESC
"""


def utilization_series(window_s: float, resolution: str | None = None) -> str:
    """GPU utilization over time: mean and min over all GPUs per time bucket.

    Raw samples for short windows, else the rollups (``resolution_for``; ``resolution`` forces one).
    """
    res = resolution or resolution_for(window_s)
    if res != "raw":
        return f"""
SELECT time_bucket(INTERVAL '{rollup_bucket_s(window_s, res)} seconds', ts) AS t,
       {combined_mean("util_gpu_pct")} AS mean_util_pct, min(util_gpu_pct_min) AS min_util_pct
FROM {rollup_rows("gpu_samples", window_s, res, whole_hours=res == "1h")}
GROUP BY t ORDER BY t
"""
    b = bucket_s(window_s)
    return f"""
SELECT time_bucket(INTERVAL '{b} seconds', ts) AS t, avg(util_gpu_pct) AS mean_util_pct,
       min(util_gpu_pct) AS min_util_pct
FROM gpu_samples WHERE {since_newest("gpu_samples", window_s)}
GROUP BY t ORDER BY t
"""


def busbw_series(window_s: float, resolution: str | None = None) -> str:
    """Collective bus bandwidth over time: mean per rank and the worst rank per time bucket.

    Raw collectives for short windows, else their per communicator, rank and op rollups.
    """
    res = resolution or resolution_for(window_s)
    if res != "raw":
        return f"""
SELECT time_bucket(INTERVAL '{rollup_bucket_s(window_s, res)} seconds', ts) AS t,
       {combined_mean("busbw_gbs")} AS mean_busbw_gbs, min(busbw_gbs_min) AS min_busbw_gbs
FROM {rollup_rows("nccl_collectives", window_s, res, whole_hours=res == "1h")} WHERE kind = 'coll'
GROUP BY t ORDER BY t
"""
    b = bucket_s(window_s)
    return f"""
SELECT time_bucket(INTERVAL '{b} seconds', ts) AS t, avg(busbw_gbs) AS mean_busbw_gbs,
       min(busbw_gbs) AS min_busbw_gbs
FROM nccl_collectives WHERE kind = 'coll' AND {since_newest("nccl_collectives", window_s)}
GROUP BY t ORDER BY t
"""


def jobs(window_s: float, resolution: str | None = None) -> str:
    """Jobs and their communicators: ranks, nodes, progress and bandwidth in the window.

    Aggregated per rank first (one cheap hash group per rank), then per communicator: the distinct
    counts and the sorted host list then work on thousands of rows, not millions. Long windows read the
    collectives' rollups (``last_seen`` is then the start of the newest bucket).
    """
    res = resolution or resolution_for(window_s)
    if res != "raw":
        per_rank = f"""
    SELECT job, comm_id, rank, any_value(hostname) AS hostname, any_value(coll) AS coll, max(n_ranks_max) AS n_ranks,
           max(coll_sn_max) AS last_seq, max(ts) AS last_seen, sum(busbw_gbs_mean * busbw_gbs_n) AS busbw_sum,
           sum(busbw_gbs_n) AS busbw_n
    FROM {rollup_rows("nccl_collectives", window_s, res)}
    GROUP BY job, comm_id, rank"""
    else:
        per_rank = f"""
    SELECT job, comm_id, rank, any_value(hostname) AS hostname, any_value(coll) AS coll, max(n_ranks) AS n_ranks,
           max(coll_sn) AS last_seq, max(ts) AS last_seen, sum(busbw_gbs) AS busbw_sum, count(busbw_gbs) AS busbw_n
    FROM nccl_collectives WHERE {since_newest("nccl_collectives", window_s)}
    GROUP BY job, comm_id, rank"""
    return f"""
WITH r AS ({per_rank})
SELECT job, comm_id, any_value(coll) AS collective, max(n_ranks) AS ranks, count(DISTINCT rank) AS ranks_seen,
       count(DISTINCT hostname) AS nodes, max(last_seq) AS last_seq, max(last_seen) AS last_seen,
       sum(busbw_sum) / nullif(sum(busbw_n), 0) AS mean_busbw_gbs,
       string_agg(DISTINCT hostname, ', ' ORDER BY hostname) AS hosts
FROM r GROUP BY job, comm_id ORDER BY job, comm_id
"""
