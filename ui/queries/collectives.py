"""Collectives: per-rank durations and arrival skew per iteration; the connection matrix with the blamed ports."""

from __future__ import annotations

from c4.ui.sql import (
    ACTIVE_STATES,
    LATEST_FAULTS,
    RANK_GPU,
    RAW_MAX_S,
    combined_mean,
    in_list,
    lit,
    resolution_for,
    rollup_rows,
    since_newest,
)

#: At most this many rank rows in the heatmap; bigger communicators show groups of ranks (their worst).
MAX_RANK_ROWS = 128


def communicators(window_s: float, resolution: str | None = None) -> str:
    """Communicators seen in the window with their size, collective and progress.

    Raw collectives for short windows (the median duration), else their rollups (the mean duration).
    """
    res = resolution or resolution_for(window_s)
    if res != "raw":
        return f"""
SELECT comm_id, any_value(job) AS job, max(n_ranks_max) AS ranks, max(nnodes_max) AS nodes,
       string_agg(DISTINCT coll, ', ') AS collectives, max(coll_sn_max) AS last_seq,
       {combined_mean("exec_time_us")} / 1e3 AS mean_exec_ms, max(ts) AS last_seen
FROM {rollup_rows("nccl_collectives", window_s, res)} WHERE kind = 'coll'
GROUP BY comm_id ORDER BY ranks DESC, comm_id
"""
    return f"""
SELECT comm_id, any_value(job) AS job, max(n_ranks) AS ranks, max(nnodes) AS nodes,
       string_agg(DISTINCT coll, ', ') AS collectives, max(coll_sn) AS last_seq,
       median(exec_time_us) / 1e3 AS median_exec_ms, max(ts) AS last_seen
FROM nccl_collectives WHERE kind = 'coll' AND {since_newest("nccl_collectives", window_s)}
GROUP BY comm_id ORDER BY ranks DESC, comm_id
"""


def rank_gpus(comm_id: str) -> str:
    """Each rank of a communicator with its host, process and GPU, and how the GPU is known (rank_identity)."""
    return f"""
SELECT i.rank, {RANK_GPU} AS gpu, i.gpu_from, i.hostname, i.pid, i.cuda_dev, i.pci_bus_id, i.gpu_uuid
FROM rank_identity i WHERE i.comm_id = {lit(comm_id)} ORDER BY i.rank
"""


def rank_group(ranks: int) -> int:
    """Ranks per heatmap row so that at most MAX_RANK_ROWS rows show."""
    return max(1, -(-int(ranks or 1) // MAX_RANK_ROWS))


def rank_iterations(
    comm_id: str, window_s: float, iterations: int = 40, group: int = 1, last_seq: int | None = None
) -> str:
    """Rank (group) x iteration: the worst duration and the latest arrival relative to the first rank in.

    Per-iteration rows exist only raw: the newest ``iterations`` of the window, read from at most the raw
    samples' span (``RAW_MAX_S``) whatever the window, since older iterations are not shown anyway.
    ``last_seq`` (the communicator's last sequence number as ``communicators`` gave it, from raw rows or a
    rollup that may lag) bounds the read to the sequence numbers after ``last_seq - iterations``: a constant
    DuckDB prunes row groups with, rather than every raw row of the hour.
    """
    span_s = min(window_s, RAW_MAX_S)
    after = f"AND coll_sn > {int(last_seq) - int(iterations)}" if last_seq is not None else ""
    return f"""
WITH c AS MATERIALIZED (
    SELECT rank, coll_sn, exec_time_us, start_ts FROM nccl_collectives
    WHERE comm_id = {lit(comm_id)} AND kind = 'coll' {after} AND {since_newest("nccl_collectives", span_s)}),
recent AS (SELECT * FROM c WHERE coll_sn > (SELECT max(coll_sn) FROM c) - {int(iterations)}),
s AS (
    SELECT rank, coll_sn, exec_time_us,
           epoch_us(start_ts) - min(epoch_us(start_ts)) OVER (PARTITION BY coll_sn) AS skew_us
    FROM recent)
SELECT rank // {int(group)} * {int(group)} AS rank, coll_sn AS iteration,
       max(exec_time_us) / 1e3 AS duration_ms, max(skew_us) / 1e3 AS arrival_skew_ms
FROM s GROUP BY ALL ORDER BY rank, iteration
"""


def connection_matrix(comm_hash: str, window_s: float, by_node: bool = False) -> str:
    """Sender x receiver throughput over the window, relative to the median cell, with blamed ports flagged.

    The records are summed per connection first (one row per rank, peer, channel and port: thousands, where
    the window holds a record per connection per second, millions), and only those rows are joined with the
    receiving end and named.
    """
    src, dst = ("node", "peer_node") if by_node else ("CAST(rank AS VARCHAR)", "CAST(peer_rank AS VARCHAR)")
    return f"""
WITH c AS (
    SELECT * FROM nccl_connections
    WHERE comm_hash = {lit(comm_hash)} AND {since_newest("nccl_connections", window_s)}),
snd AS (
    SELECT rank, peer_rank, channel, node, nic_device, nic_port, sum(bytes) AS bytes, sum(transfer_us) AS transfer_us,
           sum(wait_peer_us) AS wait_peer_us, sum(ops) AS ops, sum(steps) AS steps
    FROM c WHERE direction = 'send' GROUP BY ALL),
rcv AS (SELECT DISTINCT rank, peer_rank, channel, node, nic_device, nic_port FROM c WHERE direction = 'recv'),
host_of AS (
    SELECT rank, any_value(hostname) AS node FROM nccl_collectives
    WHERE comm_id = {lit(comm_hash)} AND {since_newest("nccl_collectives", window_s)} GROUP BY rank),
j AS (
    -- the receiving end: its own 'recv' record when there is one, else the peer's host on the same rail
    SELECT s.*, coalesce(r.node, h.node, 'rank' || s.peer_rank) AS peer_node,
           s.node || '/' || s.nic_device || 'p' || s.nic_port AS src_port,
           coalesce(r.node, h.node, 'rank' || s.peer_rank) || '/' || coalesce(r.nic_device, s.nic_device) || 'p'
               || coalesce(r.nic_port, s.nic_port) AS dst_port
    FROM snd s LEFT JOIN rcv r ON r.rank = s.peer_rank AND r.peer_rank = s.rank AND r.channel = s.channel
    LEFT JOIN host_of h ON h.rank = s.peer_rank),
blamed AS (
    SELECT DISTINCT unnest(string_split(component, '<->')) AS port FROM ({LATEST_FAULTS})
    WHERE state IN {in_list(ACTIVE_STATES)} AND component_type IN ('nic_port', 'link')),
cells AS (
    SELECT {src} AS sender, {dst} AS receiver, min(rank) AS sender_pos, min(peer_rank) AS receiver_pos,
           sum(bytes) * 8 / nullif(sum(transfer_us) * 1e3, 0) AS gbps,
           sum(wait_peer_us) / nullif(sum(ops), 0) / 1e3 AS wait_peer_ms_per_op,
           sum(transfer_us) / nullif(sum(steps), 0) AS us_per_step,
           bool_or(src_port IN (SELECT port FROM blamed)) AS sender_blamed,
           bool_or(dst_port IN (SELECT port FROM blamed)) AS receiver_blamed,
           string_agg(DISTINCT src_port || ' -> ' || dst_port, ', ') AS ports
    FROM j GROUP BY ALL)
SELECT *, gbps / nullif(median(gbps) OVER (), 0) AS vs_median,
       sender_blamed OR receiver_blamed AS blamed
FROM cells ORDER BY sender_pos, receiver_pos
"""
