"""SQL: a read-only console over the collector's Query RPC, with examples and CSV/Parquet download."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import streamlit as st

from c4.query import QueryError
from c4.ui.data import CollectorDown, query_table
from c4.ui.widgets import collector_down

#: Rows the console returns at most.
CONSOLE_MAX_ROWS = 100_000

EXAMPLES = {
    "Open faults, worst first": (
        "SELECT fault_id, state, fault_class, component, confidence, action, summary\n"
        "FROM faults QUALIFY row_number() OVER (PARTITION BY fault_id ORDER BY ts DESC) = 1\n"
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
    "Rows per table": ("SELECT table_name, estimated_size AS rows FROM duckdb_tables() ORDER BY rows DESC"),
}

st.title("SQL console")
st.caption(
    "Read-only: one SELECT (or EXPLAIN) per run, executed by the collector. Tables and columns are in "
    "docs/schema.md; counters have `<table>_rate` views."
)

example = st.selectbox("Example queries", list(EXAMPLES), key="sql-example")
sql = st.text_area("SQL", value=EXAMPLES[example], height=160, key=f"sql-text-{example}")
max_rows = st.number_input("Max rows", 1, CONSOLE_MAX_ROWS, 10_000, step=1000, key="sql-max-rows")


def to_csv(table: pa.Table) -> bytes:
    """The result as CSV bytes."""
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


def to_parquet(table: pa.Table) -> bytes:
    """The result as Parquet bytes."""
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


if st.button("Run", type="primary", icon=":material/play_arrow:", key="sql-run") or sql:
    try:
        table, truncated = query_table(sql, int(max_rows))
    except CollectorDown as exc:
        collector_down(str(exc))
    except QueryError as exc:
        st.error(f"{exc}", icon=":material/error:")
    else:
        st.caption(f"{table.num_rows} rows{' (truncated at the row limit)' if truncated else ''}")
        if table.num_rows:
            st.dataframe(table.to_pandas(), hide_index=True)
        else:
            st.info("The query returned no rows.")
        a, b, _ = st.columns([1, 1, 4])
        a.download_button("CSV", to_csv(table), "c4-query.csv", "text/csv", icon=":material/download:")
        b.download_button(
            "Parquet",
            to_parquet(table),
            "c4-query.parquet",
            "application/octet-stream",
            icon=":material/download:",
        )
