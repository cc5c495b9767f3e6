"""SQL building blocks shared by the pages' queries: literals, time windows, the current state of faults."""

from __future__ import annotations

from datetime import datetime

from c4.sql_text import string_literal

#: How bad a fault class is, for colouring (higher is worse); unknown classes count as 1.
SEVERITY: dict[str, int] = {
    "comm_hang": 4,
    "non_comm_hang": 4,
    "hardware": 3,
    "comm_slow": 2,
    "non_comm_slow": 2,
    "congestion": 1,
    "application": 1,
}

#: Fault states that still need an operator.
ACTIVE_STATES = ("open", "acknowledged")


def lit(value: object) -> str:
    """A SQL literal: strings quoted with '' escaping, datetimes as TIMESTAMP, numbers as they are."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    return string_literal(str(value))


def in_list(values) -> str:
    """A parenthesised list of literals for ``IN``."""
    return "(" + ", ".join(lit(v) for v in values) + ")"


def severity_sql(col: str = "fault_class") -> str:
    """CASE expression mapping a fault class column to its severity number."""
    whens = " ".join(f"WHEN {lit(k)} THEN {v}" for k, v in SEVERITY.items())
    return f"CASE {col} {whens} ELSE 1 END"


#: Rows further ahead of the collector's clock than this (the collector's default ``max_clock_skew_s``)
#: come from a node whose clock runs ahead: they are never the "newest" row a window ends at.
MAX_CLOCK_SKEW_S = 300.0


def newest(table: str, col: str = "ts") -> str:
    """Scalar subquery: ``table``'s newest ``col`` not ahead of the collector's clock (plus the skew)."""
    ahead = f"now() AT TIME ZONE 'UTC' + to_microseconds({int(MAX_CLOCK_SKEW_S * 1e6)})"
    return f"(SELECT max({col}) FROM {table} WHERE {col} <= {ahead})"


def since_newest(table: str, window_s: float, col: str = "ts") -> str:
    """Predicate: rows of ``table`` within ``window_s`` seconds up to its newest row (live and replayed data).

    The newest row is the newest one not ahead of the collector's clock, so one row from a node whose
    clock runs a day ahead neither empties the window nor shows in it.
    """
    end = newest(table, col)
    return f"{col} BETWEEN {end} - to_microseconds({int(window_s * 1e6)}) AND {end}"


def bucket_s(window_s: float, points: int = 120) -> int:
    """A time-bucket width giving about ``points`` buckets over the window (at least 1 s)."""
    return max(1, int(window_s / points))


LATEST_FAULTS = "SELECT * FROM faults_current"

#: A rank's GPU as faults name it ("host3/gpu5") from the rank_identity view aliased ``i``; NULL when unknown.
RANK_GPU = "CASE WHEN i.gpu_index IS NOT NULL THEN i.node || '/gpu' || i.gpu_index END"


def node_order(col: str = "node") -> str:
    """Sort key putting host2 before host10 (the trailing number, then the name)."""
    return f"coalesce(TRY_CAST(regexp_extract({col}, '(\\d+)$') AS INTEGER), -1)"


def counter_delta(col: str, ts: str = "ts") -> str:
    """Aggregate: a raw counter's increase within a group (last - first, or last when it restarted from 0)."""
    last = f"arg_max(CAST({col} AS DOUBLE), {ts}) FILTER (WHERE {col} IS NOT NULL)"
    first = f"arg_min(CAST({col} AS DOUBLE), {ts}) FILTER (WHERE {col} IS NOT NULL)"
    return f"(CASE WHEN {last} >= {first} THEN {last} - {first} ELSE {last} END)"


#: NIC port counters read every tick, and the slow ones (NULL between slow ticks) with the row filter that finds them.
PORT_FAST = {"tx": "tx_bytes", "rx": "rx_bytes"}
PORT_SLOW = {
    "retrans": "roce_adp_retrans",
    "ack_timeouts": "local_ack_timeout_err",
    "cnp_handled": "rp_cnp_handled",
    "cnp_sent": "np_cnp_sent",
    "link_downed": "link_downed",
    "symbol_errors": "symbol_errors",
}
PORT_SLOW_ROWS = "coalesce(roce_adp_retrans, local_ack_timeout_err, rp_cnp_handled, link_downed) IS NOT NULL"


def first_last(name: str, cols: dict[str, str], where: str = "") -> str:
    """Two aggregates: struct ``first_<name>`` and ``last_<name>`` of the columns (as DOUBLE) at the earliest and
    latest ts of the group (one pass instead of two aggregates per counter)."""
    fields = ", ".join(f"'{k}': CAST({v} AS DOUBLE)" for k, v in cols.items())
    flt = f" FILTER (WHERE {where})" if where else ""
    return f"arg_min({{{fields}}}, ts){flt} AS first_{name}, arg_max({{{fields}}}, ts){flt} AS last_{name}"


def delta(name: str, key: str) -> str:
    """A counter's increase between first_<name> and last_<name> (the last value if it restarted)."""
    a, b = f"first_{name}.{key}", f"last_{name}.{key}"
    return f"(CASE WHEN {b} >= {a} THEN {b} - {a} ELSE {b} END)"


#: Windows up to this long read raw samples; up to ``MINUTE_MAX_S`` the 1-minute rollups; beyond, the hourly ones.
RAW_MAX_S = 3600.0
MINUTE_MAX_S = 2 * 86400.0
#: Rollup resolution -> bucket width, seconds (as c4.catalogue.rollup declares them).
ROLLUP_S = {"1m": 60, "1h": 3600}


def resolution_for(window_s: float) -> str:
    """The data a time-series query over ``window_s`` reads: ``raw``, ``1m`` or ``1h`` rollups."""
    if window_s <= RAW_MAX_S:
        return "raw"
    return "1m" if window_s <= MINUTE_MAX_S else "1h"


def rollups_present(table: str) -> str:
    """Query: one row saying whether ``table``'s minute (``m``) and hour (``h``) rollups hold any row.

    A young store (the collector has not rolled yet) and a lake (its collectors roll up nothing) have
    empty rollups: their pages read the raw rows at every window instead.
    """
    return f"SELECT EXISTS (SELECT 1 FROM {table}_1m) AS m, EXISTS (SELECT 1 FROM {table}_1h) AS h"


def pick_resolution(window_s: float, present: dict) -> str:
    """``resolution_for(window_s)``, or the next finer data that exists (``present``: a ``rollups_present`` row)."""
    res = resolution_for(window_s)
    if res == "1h" and not present.get("h"):
        res = "1m"
    if not present.get("m"):  # rollup reads end at the newest minute (rollup_rows)
        res = "raw"
    return res


def resolution_note(window_s: float, resolution: str | None = None) -> str:
    """A caption saying which data a window's series show (``resolution``: what was read, when known)."""
    res = resolution or resolution_for(window_s)
    if res == "raw":
        if resolution_for(window_s) != "raw":
            return "Raw samples (no rollups in this store yet: long windows read every raw row)."
        return "Raw samples."
    what = {"1m": "1-minute", "1h": "1-hour"}[res]
    return f"From {what} rollups (the raw samples of the last {RAW_MAX_S / 3600:g} h cover shorter windows)."


def rollup_rows(table: str, window_s: float, resolution: str, whole_hours: bool = True) -> str:
    """A subquery (``(...) AS r``) of ``table``'s rollup rows over the ``window_s`` up to its newest minute.

    ``1m`` without ``whole_hours``: the minute rows (for series bucketed finer than an hour). Otherwise the
    hour rows of the hours wholly inside the window and the minute rows of the rest: the window's partial
    first hour and the minutes after the newest rolled hour (the current hour, which the hourly rollup holds
    only once it has passed). An hour row combines its minutes exactly (``c4.catalogue.rollup``), so the sums,
    minima, maxima and weighted means over these rows are those over the minutes, from ~60x fewer rows.
    """
    m, h = f"{table}_1m", f"{table}_1h"
    end = newest(m)  # pick_resolution reads rollups only where the minute rollup holds rows
    start = f"({end} - to_microseconds({int(window_s * 1e6)}))"
    if resolution == "1m" and not whole_hours:
        return f"(SELECT * FROM {m} WHERE ts BETWEEN {start} AND {end}) AS r"
    first_hour = f"(time_bucket(INTERVAL '1 hour', {start} - INTERVAL '1 microsecond') + INTERVAL '1 hour')"
    # the end of the newest rolled hour, never before first_hour (no hour rolled yet, or none in the window)
    hours_end = (
        f"(SELECT greatest(coalesce(max(ts) + INTERVAL '1 hour', {first_hour}), {first_hour}) FROM {h})"
    )
    # three plain ranges, each bound one scalar subquery: DuckDB then skips row groups by the range, where an OR,
    # a coalesce or a greatest around the subqueries made it read every minute row (0.03 s against 3-6 s a week)
    return f"""(
    SELECT * FROM {h} WHERE ts >= {first_hour} AND ts < {hours_end}
    UNION ALL BY NAME
    SELECT * FROM {m} WHERE ts >= {start} AND ts < {first_hour} AND ts <= {end}
    UNION ALL BY NAME
    SELECT * FROM {m} WHERE ts >= {hours_end} AND ts <= {end}) AS r"""


def rollup_bucket_s(window_s: float, resolution: str, points: int = 120) -> int:
    """``bucket_s`` rounded up to whole rollup buckets, so each point combines whole buckets."""
    width = ROLLUP_S[resolution]
    return max(width, -(-bucket_s(window_s, points) // width) * width)


def combined_mean(col: str) -> str:
    """Aggregate: the mean of a rolled-up value over the rows grouped (each raw sample weighted once)."""
    return f"sum({col}_mean * {col}_n) / nullif(sum({col}_n), 0)"
