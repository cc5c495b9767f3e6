"""Bandwidth: NIC port throughput against nominal rate, retransmits and CNPs; per-rank collective bus bandwidth."""

from __future__ import annotations

from c4.ui.sql import (
    ACTIVE_STATES,
    LATEST_FAULTS,
    bucket_s,
    counter_delta,
    in_list,
    lit,
    node_order,
    since_newest,
)


def port_table(window_s: float) -> str:
    """One row per NIC port over the window: tx/rx Gbit/s, current and nominal rate, utilization, retransmits, CNPs."""
    return f"""
WITH p AS (
    SELECT node, device, port, device || 'p' || port AS port_name,
           {counter_delta("tx_bytes")} * 8 / 1e9 / nullif(epoch(max(ts)) - epoch(min(ts)), 0) AS tx_gbps,
           {counter_delta("rx_bytes")} * 8 / 1e9 / nullif(epoch(max(ts)) - epoch(min(ts)), 0) AS rx_gbps,
           arg_max(rate_bps, ts) / 1e9 AS rate_gbps, max(rate_bps) / 1e9 AS port_max_gbps,
           arg_max(state, ts) AS state,
           coalesce({counter_delta("roce_adp_retrans")}, 0) + coalesce({counter_delta("local_ack_timeout_err")}, 0) AS retransmits,
           coalesce({counter_delta("rp_cnp_handled")}, 0) AS cnps_handled,
           coalesce({counter_delta("np_cnp_sent")}, 0) AS cnps_sent,
           coalesce({counter_delta("link_downed")}, 0) AS link_downs,
           coalesce({counter_delta("symbol_errors")}, 0) AS symbol_errors
    FROM ib_port_samples WHERE {since_newest("ib_port_samples", window_s)}
    GROUP BY node, device, port)
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
    b = bucket_s(window_s)
    return f"""
WITH per_port AS (
    SELECT time_bucket(INTERVAL '{b} seconds', ts) AS t,
           {counter_delta("tx_bytes")} AS tx, {counter_delta("rx_bytes")} AS rx,
           coalesce({counter_delta("roce_adp_retrans")}, 0) + coalesce({counter_delta("local_ack_timeout_err")}, 0) AS retrans,
           coalesce({counter_delta("rp_cnp_handled")}, 0) AS cnp,
           nullif(epoch(max(ts)) - epoch(min(ts)), 0) AS dt_s
    FROM ib_port_samples WHERE {since_newest("ib_port_samples", window_s)}
    GROUP BY t, node, device, port)
SELECT t, sum(tx * 8 / dt_s / 1e9) AS tx_gbps, sum(rx * 8 / dt_s / 1e9) AS rx_gbps,
       sum(retrans) AS retransmits, sum(cnp) AS cnps_handled
FROM per_port GROUP BY t ORDER BY t
"""


def port_series(window_s: float, node: str, device: str, port: int) -> str:
    """One port per time bucket: tx/rx Gbit/s against its negotiated rate, retransmits and CNPs."""
    b = bucket_s(window_s)
    return f"""
SELECT time_bucket(INTERVAL '{b} seconds', ts) AS t,
       {counter_delta("tx_bytes")} * 8 / 1e9 / nullif(epoch(max(ts)) - epoch(min(ts)), 0) AS tx_gbps,
       {counter_delta("rx_bytes")} * 8 / 1e9 / nullif(epoch(max(ts)) - epoch(min(ts)), 0) AS rx_gbps,
       min(rate_bps) / 1e9 AS rate_gbps,
       coalesce({counter_delta("roce_adp_retrans")}, 0) + coalesce({counter_delta("local_ack_timeout_err")}, 0) AS retransmits,
       coalesce({counter_delta("rp_cnp_handled")}, 0) AS cnps_handled
FROM ib_port_samples
WHERE node = {lit(node)} AND device = {lit(device)} AND port = {int(port)} AND {since_newest("ib_port_samples", window_s)}
GROUP BY t ORDER BY t
"""


def rank_busbw(window_s: float) -> str:
    """Per communicator and rank: mean and worst collective bus bandwidth in the window."""
    return f"""
SELECT comm_id, rank, any_value(hostname) AS node, avg(busbw_gbs) AS mean_busbw_gbs, min(busbw_gbs) AS min_busbw_gbs,
       count(*) AS collectives
FROM nccl_collectives WHERE kind = 'coll' AND {since_newest("nccl_collectives", window_s)}
GROUP BY comm_id, rank ORDER BY comm_id, rank
"""


def port_faults() -> str:
    """Active faults on NIC ports and links, for the page's headline."""
    return f"""
SELECT component, detector, fault_class, state, summary FROM ({LATEST_FAULTS})
WHERE state IN {in_list(ACTIVE_STATES)} AND component_type IN ('nic_port', 'link')
ORDER BY component, detector
"""
