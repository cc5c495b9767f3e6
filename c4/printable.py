"""Query results made fit for polars, a terminal, CSV, JSON and Parquet: what they cannot take becomes text.

A read-only SELECT may return any DuckDB type. polars cannot import intervals or unions, panics showing a
date outside chrono's range (DuckDB's ``'-infinity'::DATE``), and its CSV and JSON writers take no nested
values (CSV) or bytes; Parquet has no interval or union. Values Python cannot hold (times past year 9999
or before year 1) are shown as their raw ticks (``c4.report.printable_times``); the rest as text here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from c4.report import TICKS_PER_S, printable_times

#: Output formats :func:`printable_values` prepares for.
FORMATS = ("table", "csv", "json", "parquet")

_EPOCH_DAY = date(1970, 1, 1).toordinal()
#: Dates Python (and so every later step) can hold, as days since 1970.
_DATE_LO_DAYS = date.min.toordinal() - _EPOCH_DAY
_DATE_HI_DAYS = date.max.toordinal() - _EPOCH_DAY
#: DuckDB's ``'infinity'::DATE`` in days (negated: ``'-infinity'``).
_DATE_INFINITY_DAYS = (1 << 31) - 1


def interval_text(months: int, days: int, nanoseconds: int) -> str:
    """An interval as DuckDB writes one: ``1 year 2 months 3 days 04:05:06.5`` (``00:00:00`` when empty)."""
    parts = []
    years = int(months / 12)  # toward zero: -14 months is -1 year -2 months
    months -= years * 12
    for value, unit in ((years, "year"), (months, "month"), (days, "day")):
        if value:
            parts.append(f"{value} {unit}{'' if abs(value) == 1 else 's'}")
    if nanoseconds or not parts:
        sign = "-" if nanoseconds < 0 else ""
        seconds, frac_ns = divmod(abs(nanoseconds), TICKS_PER_S["ns"])
        hours, rest = divmod(seconds, 3600)
        clock = f"{sign}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
        if frac_ns:
            clock += f".{frac_ns:09d}".rstrip("0")
        parts.append(clock)
    return " ".join(parts)


def _json_default(value: Any) -> Any:
    """What json.dumps cannot write itself: bytes as escapes, times as ISO, the rest as str()."""
    if isinstance(value, bytes):
        return bytes_text(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def _json_text(value: Any) -> str:
    """A nested value (or one polars cannot take) as JSON text."""
    return json.dumps(_plain(value), default=_json_default)


def bytes_text(value: bytes) -> str:
    """Bytes as DuckDB shows a BLOB: printable ASCII kept, every other byte as ``\\xNN``."""
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02X}" for b in value)


def _as_text(column: pa.ChunkedArray, text: Callable[[Any], str]) -> pa.Array:
    """A column as strings, ``text`` applied to each non-null Python value."""
    return pa.array([None if v is None else text(v) for v in column.to_pylist()], type=pa.string())


def _interval_value_text(v: Any) -> str:
    return interval_text(v.months, v.days, v.nanoseconds)


def _date_column(column: pa.ChunkedArray) -> pa.Array | None:
    """A date column holding days Python cannot hold, as text (ISO, or ``out of range (<n> days)``); else
    None (the column stays as it is)."""
    if pa.types.is_date32(column.type):
        days = pc.cast(column, pa.int32())
    else:  # date64: milliseconds since 1970
        days = pc.cast(pc.divide(pc.cast(column, pa.int64()), 86_400_000), pa.int64())
    bad = pc.or_(pc.less(days, _DATE_LO_DAYS), pc.greater(days, _DATE_HI_DAYS))
    if not pc.any(bad).as_py():
        return None

    def text(n: int) -> str:
        if abs(n) == _DATE_INFINITY_DAYS:
            return "infinity" if n > 0 else "-infinity"
        if not _DATE_LO_DAYS <= n <= _DATE_HI_DAYS:
            return f"out of range ({n} days)"
        return date.fromordinal(n + _EPOCH_DAY).isoformat()

    return _as_text(days, text)


def _has(kind: pa.DataType, test: Callable[[pa.DataType], bool]) -> bool:
    """Whether ``kind`` or a type nested in it passes ``test``."""
    if test(kind):
        return True
    return any(_has(kind.field(i).type, test) for i in range(kind.num_fields))


def _is_binary(kind: pa.DataType) -> bool:
    return (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or pa.types.is_binary_view(kind)
    )


def _is_nested(kind: pa.DataType) -> bool:
    return kind.num_fields > 0


def _unshowable(kind: pa.DataType) -> bool:
    """Types polars cannot import (and Parquet cannot store), anywhere in the type."""
    return _has(kind, lambda t: pa.types.is_interval(t) or pa.types.is_union(t))


def printable_values(table: pa.Table, fmt: str = "table") -> pa.Table:
    """The table with what ``fmt`` (one of :data:`FORMATS`) cannot take written as text.

    Every format: times and dates Python cannot hold, intervals and unions (nested ones too: the whole
    column as JSON text). CSV also: nested values as JSON text and bytes as escapes; JSON: bytes as escapes.
    Columns that need nothing are returned as they are.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    names = unique_names(table.column_names)
    if names != table.column_names:  # SELECT 1 AS v, 2 AS v: polars and Parquet readers refuse the twins
        table = table.rename_columns(names)
    table = printable_times(table)
    for i, field in enumerate(table.schema):
        kind, column = field.type, table.column(i)
        new: pa.Array | pa.ChunkedArray | None = None
        if _is_nested(kind) and _has(kind, pa.types.is_temporal) and not _unshowable(kind):
            # dates and times inside lists and structs as Arrow writes them ('<value out of range: N>' past
            # what Python holds, where polars panicked and Python raised); then as any nested value below
            column = new = column.cast(_temporal_as_text(kind))
            kind = column.type
        if pa.types.is_date(kind):
            new = _date_column(column)
        elif pa.types.is_time(kind):
            new = _time_column(column)
        elif pa.types.is_interval(kind):
            new = _as_text(column, _interval_value_text)
        elif _unshowable(kind) or (fmt == "csv" and _is_nested(kind)):
            new = _as_text(column, _json_text)
        elif fmt in ("csv", "json") and _is_binary(kind):
            new = _as_text(column, bytes_text)
        elif fmt == "json" and _has(kind, _is_binary):
            new = _as_text(column, _json_text)
        if new is not None:
            table = table.set_column(i, pa.field(field.name, new.type), new)
    return table


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique as DuckDB does for a table: the second ``v`` becomes ``v_1``."""
    seen: set[str] = set()
    out = []
    for name in names:
        unique, n = name, 0
        while unique in seen:
            n += 1
            unique = f"{name}_{n}"
        seen.add(unique)
        out.append(unique)
    return out


def _temporal_as_text(kind: pa.DataType) -> pa.DataType:
    """``kind`` with every date, time and timestamp in it replaced by a string."""
    if pa.types.is_temporal(kind):
        return pa.string()
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _temporal_as_text(f.type), f.nullable) for f in kind])
    if pa.types.is_map(kind):
        return pa.map_(_temporal_as_text(kind.key_type), _temporal_as_text(kind.item_type))
    if pa.types.is_fixed_size_list(kind):
        return pa.list_(_temporal_as_text(kind.value_type), kind.list_size)
    if pa.types.is_large_list(kind):
        return pa.large_list(_temporal_as_text(kind.value_type))
    if pa.types.is_list(kind):
        return pa.list_(_temporal_as_text(kind.value_type))
    return kind


def _time_column(column: pa.ChunkedArray) -> pa.Array | None:
    """A time-of-day column holding 24:00:00 (DuckDB's end of day, past what Python holds) as text; else None."""
    per_s = TICKS_PER_S[column.type.unit]
    ticks = pc.cast(column, pa.int64())
    if not pc.any(pc.greater_equal(ticks, 86_400 * per_s)).as_py():
        return None

    def text(v: int) -> str:
        whole, frac = divmod(v, per_s)
        clock = f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"
        return clock + (f".{frac:0{len(str(per_s)) - 1}d}".rstrip("0") if frac else "")

    return _as_text(ticks, text)


def _plain(value: Any) -> Any:
    """A nested Python value with intervals written as text (json.dumps would write their repr)."""
    if isinstance(value, pa.MonthDayNano):  # a named tuple: before the tuples
        return _interval_value_text(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
