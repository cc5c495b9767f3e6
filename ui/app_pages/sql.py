"""SQL: a read-only console over the collector's Query RPC, with examples and CSV/Parquet download."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import streamlit as st

from c4.printable import printable_values
from c4.query import QueryError
from c4.ui.data import CollectorDown, query_table
from c4.ui.queries.console import EXAMPLES
from c4.ui.widgets import collector_down

#: Rows the console returns at most.
CONSOLE_MAX_ROWS = 100_000

st.title("SQL console")
st.caption(
    "Read-only: one SELECT (or EXPLAIN) per run, executed by the collector. Tables and columns are in "
    "docs/schema.md; counters have `<table>_rate` views."
)

example = st.selectbox("Example queries", list(EXAMPLES), key="sql-example")
sql = st.text_area("SQL", value=EXAMPLES[example], height=160, key=f"sql-text-{example}")
max_rows = st.number_input("Max rows", 1, CONSOLE_MAX_ROWS, 10_000, step=1000, key="sql-max-rows")


def to_csv(table: pa.Table) -> bytes:
    """The result as CSV bytes (nested values as JSON text, bytes as escapes)."""
    sink = io.BytesIO()
    pacsv.write_csv(printable_values(table, "csv"), sink)
    return sink.getvalue()


def to_parquet(table: pa.Table) -> bytes:
    """The result as Parquet bytes (intervals and unions as text)."""
    sink = io.BytesIO()
    pq.write_table(printable_values(table, "parquet"), sink)
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
            st.dataframe(printable_values(table).to_pandas(), hide_index=True)
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
