"""Faults: the list, one fault's evidence, its history, the actions taken and the timeline around onset."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from c4.ui.sql import LATEST_FAULTS, bucket_s, counter_delta, in_list, lit, severity_sql

#: Seconds of data shown before a fault's onset and after its last sighting.
BEFORE_S = 300.0
AFTER_S = 120.0


def fault_list(states: tuple[str, ...], limit: int = 500) -> str:
    """Current state of every fault in ``states``, worst and newest first."""
    return f"""
SELECT fault_id, state, fault_class, component_type, component, node, detector, round(confidence, 2) AS confidence,
       action, first_seen, last_seen, ts AS updated, summary, {severity_sql()} AS severity
FROM ({LATEST_FAULTS}) WHERE state IN {in_list(states)}
ORDER BY state = 'resolved', severity DESC, last_seen DESC, fault_id LIMIT {int(limit)}
"""


def fault_detail(fault_id: str) -> str:
    """The latest row of one fault, evidence included."""
    return f"SELECT * FROM faults WHERE fault_id = {lit(fault_id)} ORDER BY ts DESC LIMIT 1"


def fault_history(fault_id: str) -> str:
    """State changes of one fault (the first row and every row whose state differs from the one before)."""
    return f"""
SELECT ts, state, confidence, last_seen FROM (
    SELECT ts, state, confidence, last_seen, lag(state) OVER (ORDER BY ts) AS prev
    FROM faults WHERE fault_id = {lit(fault_id)})
WHERE prev IS NULL OR prev <> state ORDER BY ts
"""


def fault_actions(fault_id: str) -> str:
    """Alerts sent and isolation commands for one fault."""
    return (
        "SELECT ts, sink, target, fault_state, outcome, attempts, detail FROM actions "
        f"WHERE fault_id = {lit(fault_id)} ORDER BY ts"
    )


#: The recovery stages in the order a fault goes through them (dry runs beside the stage they stand for).
RECOVERY_STAGES = (
    "onset",
    "detected",
    "alerted",
    "isolated_dry_run",
    "isolated",
    "restarted_dry_run",
    "restarted",
    "recovered",
)


def recovery_timeline(fault_id: str) -> str:
    """One fault's recovery stages reached (fault_timeline view): when, how long after onset, what showed it."""
    order = ", ".join(f"{lit(s)}" for s in RECOVERY_STAGES)
    return (
        "SELECT stage, ts, since_onset_s, source FROM fault_timeline "
        f"WHERE fault_id = {lit(fault_id)} ORDER BY list_position([{order}], stage), ts"
    )


def _span(first_seen: datetime | None, last_seen: datetime | None) -> tuple[datetime, datetime]:
    first = first_seen or last_seen or datetime(1970, 1, 1)
    last = last_seen or first
    return first - timedelta(seconds=BEFORE_S), last + timedelta(seconds=AFTER_S)


def timeline(node: str, first_seen: datetime | None, last_seen: datetime | None) -> str:
    """Events on the fault's node and every fault detected around its onset, in time order."""
    a, b = (lit(x) for x in _span(first_seen, first_seen))
    return f"""
SELECT ts, 'gpu event' AS source, node, kind || coalesce(' ' || xid, '') || coalesce(' gpu' || gpu_index, '') AS what,
       coalesce(xid_name || ': ', '') || message AS detail
FROM gpu_events WHERE node = {lit(node)} AND ts BETWEEN {a} AND {b}
UNION ALL
SELECT ts, 'nic event', node, kind || ' ' || coalesce(nullif(device, ''), netdev), message
FROM nic_events WHERE node = {lit(node)} AND ts BETWEEN {a} AND {b}
UNION ALL
SELECT first_seen, 'fault detected', node, detector || ' ' || component, summary
FROM ({LATEST_FAULTS}) WHERE first_seen BETWEEN {a} AND {b}
UNION ALL
SELECT onset_ts, 'injected (simulation)', node, fault || ' ' || component, 'expected ' || expected_class || ', ' || expected_action
FROM sim_ground_truth WHERE onset_ts BETWEEN {a} AND {b}
ORDER BY ts LIMIT 500
"""


def parse_component(component: str) -> dict[str, object]:
    """'host1/mlx5_2p1' -> node, device, port; 'host2/gpu3' -> node, gpu; links give their first end."""
    first = component.split("<->")[0]
    node, _, part = first.partition("/")
    out: dict[str, object] = {"node": node}
    if m := re.fullmatch(r"gpu(\d+)", part):
        out["gpu"] = int(m.group(1))
    elif m := re.fullmatch(r"(.+)p(\d+)", part):
        out["device"], out["port"] = m.group(1), int(m.group(2))
    return out


def gpu_evidence(node: str, gpu: int, first_seen, last_seen) -> str:
    """The faulty GPU against the mean of its node's other GPUs around the fault: utilization, clocks, temperature, power."""
    a, b = _span(first_seen, last_seen)
    bs = bucket_s((b - a).total_seconds())
    return f"""
SELECT time_bucket(INTERVAL '{bs} seconds', ts) AS t,
       CASE WHEN gpu_index = {int(gpu)} THEN 'gpu{int(gpu)}' ELSE 'other GPUs (mean)' END AS series,
       avg(util_gpu_pct) AS util_pct, avg(clock_sm_mhz) AS clock_sm_mhz, avg(temp_gpu_c) AS temp_c,
       avg(power_w) AS power_w, max(clocks_event_reasons) AS clocks_event_reasons
FROM gpu_samples WHERE node = {lit(node)} AND ts BETWEEN {lit(a)} AND {lit(b)}
GROUP BY t, series ORDER BY t, series
"""


def port_evidence(node: str, device: str, port: int, first_seen, last_seen) -> str:
    """The faulty port against the mean of its node's other ports: tx/rx Gbit/s, rate, retransmits and CNPs per bucket."""
    a, b = _span(first_seen, last_seen)
    bs = bucket_s((b - a).total_seconds())
    me = f"device = {lit(device)} AND port = {int(port)}"
    return f"""
WITH per_port AS (
    SELECT time_bucket(INTERVAL '{bs} seconds', ts) AS t, device, port,
           CASE WHEN {me} THEN '{device}p{int(port)}' ELSE 'other ports (mean)' END AS series,
           {counter_delta("tx_bytes")} AS tx, {counter_delta("rx_bytes")} AS rx,
           {counter_delta("roce_adp_retrans")} + coalesce({counter_delta("local_ack_timeout_err")}, 0) AS retrans,
           {counter_delta("rp_cnp_handled")} AS cnp,
           nullif(epoch(max(ts)) - epoch(min(ts)), 0) AS dt_s, arg_max(rate_bps, ts) AS rate_bps,
           min(state) FILTER (WHERE state <> 'ACTIVE') AS bad_state
    FROM ib_port_samples WHERE node = {lit(node)} AND ts BETWEEN {lit(a)} AND {lit(b)}
    GROUP BY t, device, port)
SELECT t, series, avg(tx * 8 / dt_s / 1e9) AS tx_gbps, avg(rx * 8 / dt_s / 1e9) AS rx_gbps,
       avg(rate_bps / 1e9) AS rate_gbps, avg(retrans) AS retransmits, avg(cnp) AS cnps_handled,
       max(bad_state) AS down_state
FROM per_port GROUP BY t, series ORDER BY t, series
"""


def connections_through(node: str, device: str, first_seen, last_seen) -> str:
    """Communicators with connections through a NIC of a node around the fault (for the connection matrix)."""
    a, b = _span(first_seen, last_seen)
    return (
        f"SELECT DISTINCT comm_hash FROM nccl_connections WHERE node = {lit(node)} AND nic_device = {lit(device)} "
        f"AND ts BETWEEN {lit(a)} AND {lit(b)} ORDER BY comm_hash"
    )
