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
    delta,
    first_last,
    in_list,
    lit,
    node_order,
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


def port_table(window_s: float) -> str:
    """One row per NIC port over the window: tx/rx Gbit/s, current and nominal rate, utilization, retransmits, CNPs."""
    win = since_newest("ib_port_samples", window_s)
    return f"""
WITH raw AS ({_spans("1 AS one", win)}),
cur AS (
    SELECT node, device, port, arg_max(rate_bps, ts) / 1e9 AS rate_gbps, arg_max(state, ts) AS state
    FROM ib_port_samples WHERE {since_newest("ib_port_samples", CURRENT_S)} GROUP BY ALL),
r AS ({_resets(since_newest("ib_port_samples", window_s))}),
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


def cluster_series(window_s: float) -> str:
    """All ports together per time bucket: total tx and rx Gbit/s, retransmits and CNPs."""
    b = bucket_s(window_s, points=60)  # one group per port and bucket: keep the groups few
    t = f"time_bucket(INTERVAL '{b} seconds', ts)"
    return f"""
WITH raw AS ({_spans(f"{t} AS t", since_newest("ib_port_samples", window_s))}),
r AS (SELECT DISTINCT {t} AS t, node, device, port FROM nic_events
      WHERE kind = 'counter_reset' AND {since_newest("ib_port_samples", window_s)}),
p AS (SELECT raw.t, {RATES} FROM raw LEFT JOIN r ON r.t = raw.t AND r.node = raw.node AND r.device = raw.device AND r.port = raw.port)
SELECT t, sum(tx_gbps) AS tx_gbps, sum(rx_gbps) AS rx_gbps, sum(retransmits) AS retransmits,
       sum(cnps_handled) AS cnps_handled
FROM p GROUP BY t ORDER BY t
"""


def port_series(window_s: float, node: str, device: str, port: int) -> str:
    """One port per time bucket: tx/rx Gbit/s against its negotiated rate, retransmits and CNPs."""
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


def rank_busbw(window_s: float) -> str:
    """Per communicator and rank: mean and worst collective bus bandwidth in the window, and the rank's GPU."""
    return f"""
WITH b AS (
    SELECT comm_id, rank, any_value(hostname) AS node, avg(busbw_gbs) AS mean_busbw_gbs,
           min(busbw_gbs) AS min_busbw_gbs, count(*) AS collectives
    FROM nccl_collectives WHERE kind = 'coll' AND {since_newest("nccl_collectives", window_s)}
    GROUP BY comm_id, rank)
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
