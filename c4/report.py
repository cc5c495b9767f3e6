"""Printing benchmark and command results: a human table, then optionally one JSON line."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any


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
