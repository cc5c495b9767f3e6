"""The look-back rows a rollup's first rates need: per entity, from its last reading of each counter on.

A minute's first sample of a counter has its rate from the counter's previous reading, so the rollup compute
reads raw rows from ``RATE_LOOKBACK_S`` before its first bucket (``c4.collector.rollup``). Of that minute
of rows only the last reading of each counter matters: the rest are older readings the rates never look
at. Reading them all doubled what a minute's rollup read, sorted and (for a wide table) flattened.

Here, per entity (its rollup keys), a cut time ``k`` is computed from the look-back rows with one GROUP BY,
and only the look-back rows from ``k`` on are read:

- a scalar counter: its last non-NULL reading (a counter NULL in every row is ignored);
- a list counter (``per_element``): the last row where every element of its list is valid (none: the
  first row with a list), so every element's last valid reading is from ``k`` on;
- an on-change list counter: its rows that carry a list are read anyway (the fill needs them) and the
  entity's last row, which is filled from the last of them, is its last reading; only where the NULL
  elements of its lists differ between them (an element that stopped or started being reported) would an
  older filled row be an element's last valid reading, and then every row is read;
- a wide table's key lists differing between rows of the entity: every row is read.

``k`` is never after the entity's last look-back row. Reading more look-back rows than these never changes
a rate (a rate looks at the last reading only), so the rollups are those of the whole look-back
(``tests/collector/test_rollup_lookback.py`` compares them).
"""

from __future__ import annotations

from datetime import datetime

from c4.catalogue import TableSpec
from c4.sql_text import quote_name


def timestamp_sql(dt: datetime) -> str:
    """A naive UTC datetime as a SQL TIMESTAMP literal."""
    return f"TIMESTAMP '{dt.isoformat(sep=' ')}'"


def _joined(keys: list[str], left: str, right: str) -> str:
    """Join condition on ``keys`` (NULL keys match NULL keys, as ``entity_starts`` groups them)."""
    return " AND ".join(f"{left}.{quote_name(k)} IS NOT DISTINCT FROM {right}.{quote_name(k)}" for k in keys)


def scalar_lookback_sql(
    table: str,
    time_column: str,
    keys: list[str],
    select: list[str],
    counters: list[str],
    lookback: datetime,
    start: datetime,
    cut: bool = True,
) -> str:
    """SELECT of ``select`` (expressions over the raw table's columns) from the rows in [lookback, start) of
    ``table`` that the first rates need: per ``keys``, from the last reading of each of ``counters`` on
    (``cut`` False: every row, as before the cut)."""
    t = quote_name(time_column)
    parts = [f"max({t})"] + [f"max({t}) FILTER (WHERE {quote_name(c)} IS NOT NULL)" for c in counters]
    k = f"least({', '.join(parts)})" if cut else None
    return _cut_select(quote_name(table), t, keys, select, k, lookback, lookback, start, [])


def wide_lookback_sql(
    stored: TableSpec,
    select: list[str],
    counters: list[str],
    lookback: datetime,
    fill_from: datetime,
    start: datetime,
    cut: bool = True,
) -> str:
    """SELECT of ``select`` from the rows of the wide table ``stored`` in [fill_from, start) that the first
    rates and the on-change fill need: those that carry an on-change list, and those in [lookback, start)
    from ``k`` on (``cut`` False: every row in [lookback, start), as before the cut)."""
    el = stored.element
    if el is None:
        raise ValueError(f"{stored.name!r} is not a wide table")
    by_name = {c.name: c for c in stored.columns}
    t = quote_name(stored.time_column or "ts")
    key_list = quote_name(el.key)
    recent = f"{t} >= {timestamp_sql(lookback)}"
    parts = [
        f"max({t}) FILTER (WHERE {recent})",
        f"CASE WHEN min({key_list}) IS DISTINCT FROM max({key_list}) THEN min({t}) END",
    ]
    carriers = []
    for name in counters:
        c = quote_name(name)
        if by_name[name].on_change:
            carriers.append(c)
            # every list carried has all elements valid, or none: no element's validity changes
            same = f"coalesce(bool_and(list_count({c}) = len({key_list})) OR max(list_count({c})) = 0, true)"
            parts.append(f"CASE WHEN NOT {same} THEN min({t}) END")
            continue
        whole = f"max({t}) FILTER (WHERE {recent} AND list_count({c}) = len({key_list}))"
        first = f"min({t}) FILTER (WHERE {recent} AND {c} IS NOT NULL)"
        parts.append(f"coalesce({whole}, {first})")
    return _cut_select(
        quote_name(stored.name),
        t,
        list(stored.keys),
        select,
        f"least({', '.join(parts)})" if cut else None,
        fill_from,
        lookback,
        start,
        carriers,
    )


def _cut_select(
    table: str,
    t: str,
    keys: list[str],
    select: list[str],
    cut: str | None,
    lo: datetime,
    lookback: datetime,
    start: datetime,
    carriers: list[str],
) -> str:
    """SELECT of ``select`` over the rows of ``table`` in [lo, start) that are in [lookback, start) from
    their entity's cut time on (``cut``: an aggregate over those rows; None: every row) or carry one of the
    (quoted) columns ``carriers``."""
    group = ", ".join(quote_name(k) for k in keys)
    rows = " OR ".join([f"{t} >= {timestamp_sql(lookback)}", *(f"{c} IS NOT NULL" for c in carriers)])
    where = f"WHERE {t} >= {timestamp_sql(lo)} AND {t} < {timestamp_sql(start)} AND ({rows})"
    if cut is None:
        return f"SELECT {', '.join(select)} FROM {table} {where}"
    keep = " OR ".join([f"s.{t} >= c._c4_cut_ts", *(f"s.{c} IS NOT NULL" for c in carriers)])
    return (
        f"SELECT {', '.join(select)} FROM (SELECT s.* FROM (SELECT * FROM {table} {where}) s JOIN "
        f"(SELECT {group}, {cut} AS _c4_cut_ts FROM {table} {where} GROUP BY {group}) c ON {_joined(keys, 's', 'c')} "
        f"WHERE {keep})"
    )
