"""Turns sampler rows into typed Arrow tables per catalogue table, and tables into sized IPC batches."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from c4.catalogue import Catalogue


class RowError(ValueError):
    """A sampler produced rows that do not fit the catalogue; names the table and problem."""


@dataclass(frozen=True)
class Converted:
    """Rows as a typed Arrow table, with the rows that did not fit left out and counted."""

    table: pa.Table
    dropped: int = 0
    first_error: str = ""  # why the first dropped row did not fit ('' when none was dropped)


#: What pyarrow raises for a value that does not fit its column (and a row that is not a mapping).
_ROW_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError, AttributeError)


def convert_rows(
    catalogue: Catalogue, table: str, rows: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any]
) -> Converted:
    """Typed Arrow table from row dicts; ``defaults`` fill ts/node/job where a row lacks them.

    A row that does not fit (a value out of its column's range, a wrong type, a column the catalogue
    does not declare) is left out and counted alone; the other rows are kept. Raises RowError only
    for a table the catalogue does not know.
    """
    if table not in catalogue:
        raise RowError(f"unknown table {table!r} (not in the catalogue)")
    schema = catalogue[table].arrow_schema
    known = set(schema.names)
    try:
        full = [{**defaults, **r} for r in rows]
        if all(known.issuperset(r) for r in rows):
            return Converted(pa.Table.from_pylist(full, schema=schema))
    except _ROW_ERRORS:
        pass  # find the rows that do not fit, one by one
    kept: list[pa.Table] = []
    first_error = ""
    for i, r in enumerate(rows):
        try:
            if not isinstance(r, Mapping):
                raise RowError(f"not a row (a {type(r).__name__}, not a mapping of column to value)")
            unknown = set(r) - known
            if unknown:
                raise RowError(f"columns the catalogue does not declare: {sorted(unknown)}")
            kept.append(pa.Table.from_pylist([{**defaults, **r}], schema=schema))
        except _ROW_ERRORS as exc:
            if not first_error:
                first_error = f"table {table!r}: row {i} does not fit the catalogue, dropped: {exc}"
    data = pa.concat_tables(kept).combine_chunks() if kept else schema.empty_table()
    dropped = len(rows) - len(kept)
    if dropped:
        first_error = f"{first_error} ({dropped} of {len(rows)} rows dropped)"
    return Converted(data, dropped, first_error)


def rows_to_table(
    catalogue: Catalogue, table: str, rows: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any]
) -> pa.Table:
    """As ``convert_rows``, all or nothing: raises RowError naming the first row that does not fit."""
    out = convert_rows(catalogue, table, rows, defaults)
    if out.dropped:
        raise RowError(out.first_error)
    return out.table


class TableBuffer:
    """Accumulates Arrow tables per target table until flushed."""

    def __init__(self) -> None:
        self._parts: dict[str, list[pa.Table]] = defaultdict(list)
        self.rows = 0

    def add(self, table: str, data: pa.Table) -> None:
        """Queue rows for a table."""
        if data.num_rows:
            self._parts[table].append(data)
            self.rows += data.num_rows

    def drain(self) -> Iterator[tuple[str, pa.Table]]:
        """Everything queued, one concatenated table per target table; empties the buffer."""
        parts, self._parts, self.rows = self._parts, defaultdict(list), 0
        for table, tables in parts.items():
            yield table, pa.concat_tables(tables)


def utc_from_ns(now_ns: int) -> datetime:
    """Naive UTC datetime (the store's TIMESTAMP convention) from epoch nanoseconds."""
    return datetime.fromtimestamp(now_ns / 1e9, UTC).replace(tzinfo=None)
