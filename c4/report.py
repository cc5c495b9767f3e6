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

#: Ticks per second of each Arrow timestamp unit.
_PER_S = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_EPOCH = datetime(1970, 1, 1)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain aligned text table of dict rows (floats to 4 significant digits)."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

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
    DuckDB's 'infinity', before year 1) turned into text: ISO times, and ``out of range (<raw> <unit>)``.

    Columns whose values are all in range are returned as they are.
    """

    lo_s = (datetime.min - _EPOCH).total_seconds()
    hi_s = (datetime.max - _EPOCH).total_seconds()
    for i, field in enumerate(table.schema):
        if not pa.types.is_timestamp(field.type):
            continue
        per_s = _PER_S[field.type.unit]
        raw = pc.cast(table.column(i), pa.int64())
        lo, hi = int(lo_s) * per_s, int(hi_s) * per_s
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
    if not lo <= v <= hi:
        return f"out of range ({v} {unit})"
    whole, frac = divmod(v, _PER_S[unit])
    return f"{_EPOCH + timedelta(seconds=whole, microseconds=frac * 1_000_000 // _PER_S[unit])}{tz}"
