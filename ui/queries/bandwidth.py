"""Bandwidth: NIC port throughput against nominal rate, retransmits and CNPs; per-rank collective bus bandwidth."""

from __future__ import annotations

from c4.ui.sql import (
    ACTIVE_STATES,
    LATEST_FAULTS,
    PORT_FAST,
    PORT_SLOW,
    PORT_SLOW_ROWS,
    RANK_GPU,
    bucket_s,
    combined_mean,
    delta,
    first_last,
    in_list,
    lit,
    node_order,
    resolution_for,
    rollup_bucket_s,
    rollup_rows,
    since_newest,
)

#: Seconds at the end of the window that give a port's current rate and state.
CURRENT_S = 30.0


def _spans(group: str, where: str) -> str:
    """Per port (and ``group``): each counter's increase as max - min, the time span and the best rate.

    Counters only grow between resets, and the agent reports every reset as a nic_events row; the
    callers blank ports with a reset in the window instead of paying for ordered aggregates.
    """
    incs = ", ".join(
        f"max({c})::DOUBLE - min({c})::DOUBLE AS d_{k}" for k, c in {**PORT_FAST, **PORT_SLOW}.items()
    )
    return f"""
    SELECT {group}, node, device, port, {incs}, nullif(epoch(max(ts)) - epoch(min(ts)), 0) AS dt_s,
           max(rate_bps) / 1e9 AS port_max_gbps
    FROM ib_port_samples WHERE {where}
    GROUP BY ALL"""


def _rolled_spans(group: str, rows: str, where: str = "true") -> str:
    """``_spans`` from a rollup: each counter's increase (resets and wraps already counted) and the seconds
    the tx counter's increase covers; the rates are then bytes moved / seconds, as from the raw rows."""
    incs = ", ".join(f"sum({c}_increase) AS d_{k}" for k, c in {**PORT_FAST, **PORT_SLOW}.items())
    return f"""
    SELECT {group}, node, device, port, {incs}, nullif(sum(tx_bytes_span_s), 0) AS dt_s,
           max(rate_bps_max) / 1e9 AS port_max_gbps
    FROM {rows} WHERE {where}
    GROUP BY ALL"""


#: Cluster series from the rollups with buckets this wide or wider use whole hours (see ``cluster_series``).
HOURLY_SERIES_FROM_S = 1200

#: Rollups count resets into their increases: no port is blanked.
NO_RESETS = "SELECT NULL::VARCHAR AS node, NULL::VARCHAR AS device, NULL::INTEGER AS port WHERE false"


def _resets(where: str) -> str:
    """Ports whose counters reset (per the agent's nic_events) within the window."""
    return f"SELECT DISTINCT node, device, port FROM nic_events WHERE kind = 'counter_reset' AND {where}"


RATES = """CASE WHEN r.node IS NULL THEN d_tx * 8 / 1e9 / dt_s END AS tx_gbps,
           CASE WHEN r.node IS NULL THEN d_rx * 8 / 1e9 / dt_s END AS rx_gbps,
           CASE WHEN r.node IS NULL THEN coalesce(d_retrans, 0) + coalesce(d_ack_timeouts, 0) END AS retransmits,
           CASE WHEN r.node IS NULL THEN coalesce(d_cnp_handled, 0) END AS cnps_handled,
           CASE WHEN r.node IS NULL THEN coalesce(d_cnp_sent, 0) END AS cnps_sent,
           CASE WHEN r.node IS NULL THEN coalesce(d_link_downed, 0) END AS link_downs,
           CASE WHEN r.node IS NULL THEN coalesce(d_symbol_errors, 0) END AS symbol_errors,
           r.node IS NOT NULL AS counter_reset"""


def port_table(window_s: float, resolution: str | None = None) -> str:
    """One row per NIC port over the window: tx/rx Gbit/s, current and nominal rate, utilization, retransmits, CNPs.

    Raw samples for short windows, else the rollups (``resolution_for``; ``resolution`` forces one).
    """
    res = resolution or resolution_for(window_s)
    if res == "raw":
        spans = _spans("1 AS one", since_newest("ib_port_samples", window_s))
        resets = _resets(since_newest("ib_port_samples", window_s))
    else:
        spans, resets = _rolled_spans("1 AS one", rollup_rows("ib_port_samples", window_s, res)), NO_RESETS
    return f"""
WITH raw AS ({spans}),
cur AS (
    SELECT node, device, port, arg_max(rate_bps, ts) / 1e9 AS rate_gbps, arg_max(state, ts) AS state
    FROM ib_port_samples WHERE {since_newest("ib_port_samples", CURRENT_S)} GROUP BY ALL),
r AS ({resets}),
p AS (
    SELECT raw.node, raw.device, raw.port, raw.device || 'p' || raw.port AS port_name,
           coalesce(cur.rate_gbps, 0) AS rate_gbps, port_max_gbps, coalesce(cur.state, 'GONE') AS state, {RATES}
    FROM raw LEFT JOIN cur USING (node, device, port)
    LEFT JOIN r ON r.node = raw.node AND r.device = raw.device AND r.port = raw.port)
SELECT *, max(port_max_gbps) OVER (PARTITION BY node) AS nominal_gbps,
       tx_gbps / nullif(max(port_max_gbps) OVER (PARTITION BY node), 0) AS tx_util,
       rx_gbps / nullif(max(port_max_gbps) OVER (PARTITION BY node), 0) AS rx_util,
       tx_gbps / nullif(median(tx_gbps) OVER (), 0) AS tx_vs_median,
       rate_gbps / nullif(max(port_max_gbps) OVER (PARTITION BY node), 0) AS rate_ratio,
       {node_order()} AS node_pos
FROM p ORDER BY node_pos, node, device, port
"""


def cluster_series(window_s: float, resolution: str | None = None) -> str:
    """All ports together per time bucket: total tx and rx Gbit/s, retransmits and CNPs."""
    res = resolution or resolution_for(window_s)
    if res == "raw":
        b = bucket_s(window_s, points=60)  # one group per port and bucket: keep the groups few
        t = f"time_bucket(INTERVAL '{b} seconds', ts)"
        spans = _spans(f"{t} AS t", since_newest("ib_port_samples", window_s))
        resets = f"""SELECT DISTINCT {t} AS t, node, device, port FROM nic_events
      WHERE kind = 'counter_reset' AND {since_newest("ib_port_samples", window_s)}"""
    else:
        # one group per port and bucket: from 20-minute buckets up (a day's window) they are whole hours, read from
        # the hourly rollup (24 points a day) rather than a day of minute rows per port (1,440 x 8k: 2-4 s)
        width = rollup_bucket_s(window_s, res, points=60)
        hourly = res == "1h" or width >= HOURLY_SERIES_FROM_S
        width = rollup_bucket_s(window_s, "1h", points=60) if hourly else width
        t = f"time_bucket(INTERVAL '{width} seconds', ts)"
        spans = _rolled_spans(f"{t} AS t", rollup_rows("ib_port_samples", window_s, res, whole_hours=hourly))
        resets = f"SELECT NULL::TIMESTAMP AS t, * FROM ({NO_RESETS})"
    return f"""
WITH raw AS ({spans}),
r AS ({resets}),
p AS (SELECT raw.t, {RATES} FROM raw LEFT JOIN r ON r.t = raw.t AND r.node = raw.node AND r.device = raw.device AND r.port = raw.port)
SELECT t, sum(tx_gbps) AS tx_gbps, sum(rx_gbps) AS rx_gbps, sum(retransmits) AS retransmits,
       sum(cnps_handled) AS cnps_handled
FROM p GROUP BY t ORDER BY t
"""


def port_series(window_s: float, node: str, device: str, port: int, resolution: str | None = None) -> str:
    """One port per time bucket: tx/rx Gbit/s against its negotiated rate, retransmits and CNPs."""
    res = resolution or resolution_for(window_s)
    if res != "raw":
        return f"""
SELECT time_bucket(INTERVAL '{rollup_bucket_s(window_s, res)} seconds', ts) AS t,
       sum(tx_bytes_increase) * 8 / 1e9 / nullif(sum(tx_bytes_span_s), 0) AS tx_gbps,
       sum(rx_bytes_increase) * 8 / 1e9 / nullif(sum(rx_bytes_span_s), 0) AS rx_gbps,
       min(rate_bps_min) / 1e9 AS rate_gbps,
       coalesce(sum(roce_adp_retrans_increase), 0) + coalesce(sum(local_ack_timeout_err_increase), 0) AS retransmits,
       coalesce(sum(rp_cnp_handled_increase), 0) AS cnps_handled
FROM {rollup_rows("ib_port_samples", window_s, res, whole_hours=res == "1h")}
WHERE node = {lit(node)} AND device = {lit(device)} AND port = {int(port)}
GROUP BY t ORDER BY t
"""
    b = bucket_s(window_s)
    return f"""
WITH raw AS (
    SELECT time_bucket(INTERVAL '{b} seconds', ts) AS t, {first_last("f", PORT_FAST)},
           {first_last("s", PORT_SLOW, PORT_SLOW_ROWS)}, nullif(epoch(max(ts)) - epoch(min(ts)), 0) AS dt_s,
           min(rate_bps) / 1e9 AS rate_gbps
    FROM ib_port_samples
    WHERE node = {lit(node)} AND device = {lit(device)} AND port = {int(port)} AND {since_newest("ib_port_samples", window_s)}
    GROUP BY t)
SELECT t, {delta("f", "tx")} * 8 / 1e9 / dt_s AS tx_gbps, {delta("f", "rx")} * 8 / 1e9 / dt_s AS rx_gbps, rate_gbps,
       coalesce({delta("s", "retrans")}, 0) + coalesce({delta("s", "ack_timeouts")}, 0) AS retransmits,
       coalesce({delta("s", "cnp_handled")}, 0) AS cnps_handled
FROM raw ORDER BY t
"""


def rank_busbw(window_s: float, resolution: str | None = None) -> str:
    """Per communicator and rank: mean and worst collective bus bandwidth in the window, and the rank's GPU."""
    res = resolution or resolution_for(window_s)
    if res != "raw":
        per_rank = f"""
    SELECT comm_id, rank, any_value(hostname) AS node, {combined_mean("busbw_gbs")} AS mean_busbw_gbs,
           min(busbw_gbs_min) AS min_busbw_gbs, sum(samples) AS collectives
    FROM {rollup_rows("nccl_collectives", window_s, res)} WHERE kind = 'coll'
    GROUP BY comm_id, rank"""
    else:
        per_rank = f"""
    SELECT comm_id, rank, any_value(hostname) AS node, avg(busbw_gbs) AS mean_busbw_gbs,
           min(busbw_gbs) AS min_busbw_gbs, count(*) AS collectives
    FROM nccl_collectives WHERE kind = 'coll' AND {since_newest("nccl_collectives", window_s)}
    GROUP BY comm_id, rank"""
    return f"""
WITH b AS ({per_rank})
SELECT b.*, {RANK_GPU} AS gpu, i.gpu_from
FROM b LEFT JOIN (SELECT DISTINCT ON (comm_id, rank) * FROM rank_identity) i USING (comm_id, rank)
ORDER BY comm_id, rank
"""


def port_faults() -> str:
    """Active faults on NIC ports and links, for the page's headline."""
    return f"""
SELECT component, detector, fault_class, state, summary FROM ({LATEST_FAULTS})
WHERE state IN {in_list(ACTIVE_STATES)} AND component_type IN ('nic_port', 'link')
ORDER BY component, detector
"""
