"""Load the recent window of the tables detectors need, as polars frames (from a DuckDB file or a collector)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

NEEDED = (
    "gpu_events",
    "ib_port_samples",
    "gpu_samples",
    "nvlink_samples",
    "nccl_collectives",
    "nccl_connections",
    "nccl_ras_status",
)


def window_from_cursor(cur, window_s: float) -> dict[str, pl.DataFrame]:
    """The last window_s seconds (relative to each table's newest row) of every table the detectors need, by time."""
    out = {}
    for t in NEEDED:
        out[t] = cur.execute(
            f'SELECT * FROM "{t}" WHERE ts >= (SELECT max(ts) FROM "{t}") - to_microseconds({int(window_s * 1e6)}) '
            "ORDER BY ts"
        ).pl()
    return out


def load_from_db(path: Path | str, window_s: float = 300.0) -> dict[str, pl.DataFrame]:
    """The recent window from a stopped collector's file."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return window_from_cursor(con, window_s)
    finally:
        con.close()
