"""The dashboard's only way to data: the collector's Query RPC, with a cached channel and cached results."""

from __future__ import annotations

import os

import grpc
import polars as pl
import pyarrow as pa
import streamlit as st

from c4.config import DEFAULT_COLLECTOR
from c4.query import QueryError, open_channel, query_arrow
from c4.ui.sql import pick_resolution, resolution_for, rollups_present

#: Environment variable `c4 ui` passes the collector address in.
ADDRESS_ENV = "C4_UI_COLLECTOR"
#: Seconds a query result is reused (live panels refresh at about this pace).
RESULT_TTL_S = 5
#: Rows any one dashboard query may return.
MAX_ROWS = 200_000
#: Seconds a dashboard query may run on the collector.
QUERY_TIMEOUT_S = 20.0
#: Status codes that mean the collector cannot be reached (not that the SQL is wrong).
DOWN_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class CollectorDown(RuntimeError):
    """The collector did not answer; pages show a banner and a retry button."""


def collector_address() -> str:
    """HOST:PORT of the collector this dashboard reads from."""
    return os.environ.get(ADDRESS_ENV, "").strip() or DEFAULT_COLLECTOR


@st.cache_resource(show_spinner=False)
def channel(address: str) -> grpc.Channel:
    """One gRPC channel per collector address, shared by every session."""
    return open_channel(address)


@st.cache_data(ttl=RESULT_TTL_S, show_spinner=False, max_entries=512)
def _query(address: str, sql: str, max_rows: int) -> tuple[pa.Table, bool]:
    return query_arrow(channel(address), sql, max_rows=max_rows, timeout_s=QUERY_TIMEOUT_S)


def query_table(sql: str, max_rows: int = MAX_ROWS) -> tuple[pa.Table, bool]:
    """Run read-only SQL on the collector (cached for RESULT_TTL_S); returns (Arrow table, truncated).

    Raises CollectorDown when the collector is unreachable, QueryError when it refuses the SQL.
    """
    try:
        return _query(collector_address(), sql, max_rows)
    except QueryError as exc:
        if exc.code in DOWN_CODES:
            channel.clear()  # a fresh channel on retry, not one sitting in reconnect backoff
            raise CollectorDown(str(exc)) from None
        raise


def query(sql: str, max_rows: int = MAX_ROWS) -> pl.DataFrame:
    """Run read-only SQL on the collector and return a polars frame (see query_table)."""
    table, _ = query_table(sql, max_rows)
    return pl.from_arrow(table)  # type: ignore[return-value]


def query_one(sql: str) -> dict:
    """The first row of a query as a dict ({} when there is none)."""
    df = query(sql, max_rows=1)
    return df.row(0, named=True) if df.height else {}


def resolution(table: str, window_s: float) -> str:
    """What a series of ``table`` over ``window_s`` reads: ``raw``, or its ``1m``/``1h`` rollup when that holds rows."""
    if resolution_for(window_s) == "raw":
        return "raw"
    return pick_resolution(window_s, query_one(rollups_present(table)))
