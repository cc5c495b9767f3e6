"""Load the recent window of the tables detectors need, as polars frames (from a DuckDB file or a collector)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from c4.catalogue import load

#: The shipped catalogue: which tables the detectors read are per-element views of wide tables
CATALOGUE = load()

NEEDED = (
    "gpu_events",
    "ib_port_samples",
    "gpu_samples",
    "nvlink_samples",
    "nccl_collectives",
    "nccl_connections",
    "nccl_ras_status",
    "step_ops",
    "host_cpu",
)
#: Rows of a table the detectors need, where not all: the host-stall join reads the whole host's CPU
#: ('all'); per-CPU rows would be 129 rows per 128-CPU node per sample.
NEEDED_WHERE = {"host_cpu": "cpu = 'all'"}

#: Which GPU each rank runs on (a catalogue view, one row per rank of each communicator): read whole,
#: since a communicator's init lines are logged once, long before the window.
IDENTITY_VIEW = "rank_identity"

#: Default of ``max_clock_skew_s``: how far ahead of the reader's clock a row may be and still count.
DEFAULT_MAX_CLOCK_SKEW_S = 300.0
#: Tables whose ts the collector stamps with its own clock: a stopped store's "now" is their newest row.
COLLECTOR_CLOCK_TABLES = ("collector_metrics", "nodes")
#: Timestamps past this are absurd (Python, pyarrow and polars cannot all convert them): never "now".
ABSURD_TS = "TIMESTAMP '9999-12-31 23:59:59'"


def window_from_cursor(
    cur, window_s: float, now: datetime | None = None, max_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S
) -> dict[str, pl.DataFrame]:
    """Every table the detectors need, rows from ``now - window_s`` to ``now + max_skew_s``, by time.

    ``now`` is the caller's clock (the collector's, or a simulation's); None means a stopped store's
    own time: see ``store_now``.
    """
    bound = None if now is not None else collector_clock_bound(cur, max_skew_s)
    out = {}
    for t in NEEDED:
        # live: up to the skew ahead of the clock; a stopped store: up to its newest believable row
        end = now + timedelta(seconds=max_skew_s) if now is not None else store_now(cur, t, bound)
        start = (now if now is not None else end) - timedelta(seconds=window_s) if end else None
        wide = CATALOGUE.element_views.get(t)
        if wide is not None:  # a wide table's per-link rows: read the window, not the whole table
            try:
                sql = CATALOGUE[wide.stored_in].element_window_sql()
                out[t] = cur.execute(f"{sql} ORDER BY ts", {"start": start, "end": end}).pl()
                continue
            except duckdb.CatalogException:  # a store from before the table was wide, opened read-only
                pass
        try:
            out[t] = cur.execute(
                f'SELECT * FROM "{t}" WHERE ts >= ? AND ts <= ? AND {NEEDED_WHERE.get(t, "true")} ORDER BY ts',
                [start, end],
            ).pl()
        except duckdb.CatalogException:  # a store made before the table existed, opened read-only
            out[t] = pl.DataFrame()
    out[IDENTITY_VIEW] = rank_identity(cur)
    return out


def rank_identity(cur) -> pl.DataFrame:
    """The rank_identity view (empty in a store made before the view existed, opened read-only)."""
    try:
        return cur.execute(f'SELECT * FROM "{IDENTITY_VIEW}"').pl()
    except duckdb.CatalogException:
        return pl.DataFrame()


def collector_clock_bound(cur, max_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S) -> datetime | None:
    """The latest believable ts in a stopped store: the collector's own newest row plus the skew (None if none)."""
    clocks = " UNION ALL ".join(
        f'SELECT max(ts) AS ts FROM "{c}" WHERE ts < {ABSURD_TS}' for c in COLLECTOR_CLOCK_TABLES
    )
    (clock,) = cur.execute(f"SELECT max(ts) FROM ({clocks})").fetchone()
    return clock + timedelta(seconds=max_skew_s) if clock is not None else None


def store_now(cur, table: str, bound: datetime | None) -> datetime | None:
    """A stopped store's "now" for one table: its newest row not past ``bound``.

    ``bound`` comes from the rows the collector stamped with its own clock (``collector_clock_bound``):
    a row past it came from a node whose clock ran ahead. A store the collector never stamped (a
    simulation's, a test's) keeps its data time, without absurd timestamps.
    """
    if bound is None:
        row = cur.execute(f'SELECT max(ts) FROM "{table}" WHERE ts < {ABSURD_TS}').fetchone()
    else:
        row = cur.execute(f'SELECT max(ts) FROM "{table}" WHERE ts <= ?', [bound]).fetchone()
    return row[0]


def load_from_db(
    path: Path | str, window_s: float = 300.0, now: datetime | None = None
) -> dict[str, pl.DataFrame]:
    """The recent window from a stopped collector's file (ending at ``now``, else at the store's own time)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return window_from_cursor(con, window_s, now)
    finally:
        con.close()
