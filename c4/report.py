"""Printing benchmark and command results: a human table, then optionally one JSON line."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    import pyarrow as pa

#: Ticks per second of each Arrow timestamp (and time-of-day) unit.
TICKS_PER_S = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_EPOCH = datetime(1970, 1, 1)
#: DuckDB's ``'infinity'::TIMESTAMP`` in ticks of any unit (negated: ``'-infinity'``).
_INFINITY_TICKS = (1 << 63) - 1


#: Characters a terminal acts on instead of showing: C0 controls (ESC starts colour, cursor and title
#: sequences), DEL, C1 controls (0x9b is a one-byte CSI) and the bidirectional overrides that reorder
#: what is shown. Stored text comes from agents, kernel logs and jobs' NCCL logs, so any of it may hold them.
_CONTROL_CODES = (
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x061C,
    0x200E,
    0x200F,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
)
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_TERMINAL_ESCAPES = str.maketrans(
    {chr(c): _NAMED.get(chr(c)) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CONTROL_CODES}
)
#: The same characters as an RE2 class (pyarrow.compute), to skip columns that hold none.
_CONTROL_RE = "[\\x00-\\x1f\\x7f-\\x9f\\x{61c}\\x{200e}\\x{200f}\\x{202a}-\\x{202e}\\x{2066}-\\x{2069}]"


def terminal_safe(text: str) -> str:
    """``text`` with every control character a terminal would act on written as an escape (``\\x1b``)."""
    return text.translate(_TERMINAL_ESCAPES)


def printable_text(table: pa.Table) -> pa.Table:
    """The table with control characters in its text (nested in lists and structs too) written as escapes,
    for showing on a terminal; columns without any are returned as they are."""
    for i, field in enumerate(table.schema):
        chunks = table.column(i).chunks
        safe = [_safe_array(chunk) for chunk in chunks]
        if any(a is not b for a, b in zip(safe, chunks, strict=True)):
            table = table.set_column(i, field, pa.chunked_array(safe, type=field.type))
    return table


def _safe_array(arr: pa.Array) -> pa.Array:
    """One array with :func:`terminal_safe` applied to its strings (the same object if none needs it)."""
    kind = arr.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if not pc.any(pc.match_substring_regex(arr, _CONTROL_RE)).as_py():
            return arr
        return pa.array([None if v is None else terminal_safe(v) for v in arr.to_pylist()], type=kind)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        offsets = arr.offsets
        start, end = offsets[0].as_py(), offsets[-1].as_py()
        values = arr.values.slice(start, end - start)
        safe = _safe_array(values)
        if safe is values:
            return arr
        rebased = pc.subtract(offsets, pa.scalar(start, offsets.type))  # a slice's offsets start past 0
        return type(arr).from_arrays(rebased, safe, mask=arr.is_null() if arr.null_count else None)
    if pa.types.is_struct(kind):
        children = [arr.field(j) for j in range(kind.num_fields)]
        safe = [_safe_array(child) for child in children]
        if all(a is b for a, b in zip(safe, children, strict=True)):
            return arr
        return pa.StructArray.from_arrays(
            safe, fields=list(kind), mask=arr.is_null() if arr.null_count else None
        )
    return arr


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain aligned text table of dict rows (floats to 4 significant digits)."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else terminal_safe(str(v))

    body = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def emit(title: str, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], as_json: bool) -> None:
    """Print a titled table and summary; with as_json the last line is the summary as JSON."""
    out = sys.stdout
    print(title, file=out)
    print(format_table(rows), file=out)
    for k, v in summary.items():
        if not isinstance(v, (list, dict)):
            print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}", file=out)
    if as_json:
        print(json.dumps(summary, sort_keys=True, default=str), file=out)
    out.flush()


def printable_times(table: pa.Table) -> pa.Table:
    """The table with each timestamp column holding values Python cannot represent (past year 9999,
    DuckDB's 'infinity', before year 1) turned into text: ISO times, ``infinity`` / ``-infinity``, and
    ``out of range (<raw> <unit>)``.

    Columns whose values are all in range are returned as they are.
    """

    lo_s = (datetime.min - _EPOCH).total_seconds()
    hi_s = (datetime.max - _EPOCH).total_seconds()
    for i, field in enumerate(table.schema):
        if not pa.types.is_timestamp(field.type):
            continue
        per_s = TICKS_PER_S[field.type.unit]
        raw = pc.cast(table.column(i), pa.int64())
        # nanoseconds reach only 1677-2262: bounded by int64 but for DuckDB's infinities (+-(2**63 - 1))
        lo, hi = max(int(lo_s) * per_s, -_INFINITY_TICKS + 1), min(int(hi_s) * per_s, _INFINITY_TICKS - 1)
        bad = pc.or_(pc.less(raw, lo), pc.greater(raw, hi))
        if not pc.any(bad).as_py():
            continue
        tz = "" if field.type.tz is None else " UTC"
        unit = field.type.unit
        column = pa.array(
            [_time_text(v, unit, lo, hi) + tz if v is not None else None for v in raw.to_pylist()]
        )
        table = table.set_column(i, pa.field(field.name, pa.string()), column)
    return table


def _time_text(v: int, unit: str, lo: int, hi: int, tz: str = "") -> str:
    """One raw timestamp (ticks of ``unit`` since 1970) as ISO text, or ``out of range (<v> <unit>)``."""
    if abs(v) == _INFINITY_TICKS:
        return "infinity" if v > 0 else "-infinity"
    if not lo <= v <= hi:
        return f"out of range ({v} {unit})"
    whole, frac = divmod(v, TICKS_PER_S[unit])
    return f"{_EPOCH + timedelta(seconds=whole, microseconds=frac * 1_000_000 // TICKS_PER_S[unit])}{tz}"
