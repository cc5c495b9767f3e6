"""Example queries of the SQL console (the first one runs when the page opens)."""

EXAMPLES = {
    "Open faults, worst first": (
        "SELECT fault_id, state, fault_class, component, confidence, action, summary\n"
        "FROM faults_current\n"
        "ORDER BY state, confidence DESC"
    ),
    "NIC ports below their nominal rate": (
        "SELECT node, device, port, arg_max(rate_bps, ts) / 1e9 AS rate_gbps, max(rate_bps) / 1e9 AS best_gbps\n"
        "FROM ib_port_samples GROUP BY ALL HAVING rate_gbps < best_gbps ORDER BY node, device"
    ),
    "Slowest ranks (bus bandwidth, last 10 minutes)": (
        "SELECT comm_id, rank, any_value(hostname) AS node, avg(busbw_gbs) AS busbw_gbs\n"
        "FROM nccl_collectives WHERE ts >= (SELECT max(ts) FROM nccl_collectives) - INTERVAL 10 MINUTE\n"
        "GROUP BY ALL ORDER BY busbw_gbs LIMIT 20"
    ),
    "Xid errors": "SELECT ts, node, gpu_index, xid, xid_name, action, message FROM gpu_events ORDER BY ts DESC LIMIT 100",
    "GPU temperatures now": (
        "SELECT node, gpu_index, arg_max(temp_gpu_c, ts) AS temp_c, arg_max(clock_sm_mhz, ts) AS sm_mhz\n"
        "FROM gpu_samples WHERE ts >= (SELECT max(ts) FROM gpu_samples) - INTERVAL 1 MINUTE\n"
        "GROUP BY ALL ORDER BY temp_c DESC LIMIT 20"
    ),
    "Alerts and isolation": "SELECT * FROM actions ORDER BY ts DESC LIMIT 100",
    # the store's own tables (not the side file's, which takes commits during checkpoints)
    "Rows per table": (
        "SELECT table_name, estimated_size AS rows FROM duckdb_tables()\n"
        "WHERE database_name = current_database() ORDER BY rows DESC"
    ),
}

#: The query the console runs when it opens.
FIRST_EXAMPLE = next(iter(EXAMPLES.values()))
