"""Turns sampler rows into typed Arrow tables per catalogue table, and tables into sized IPC batches."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from c4.arrow_ipc import encode_ipc
from c4.catalogue import Catalogue


class RowError(ValueError):
    """A sampler produced rows that do not fit the catalogue; names the table and problem."""


def rows_to_table(
    catalogue: Catalogue, table: str, rows: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any]
) -> pa.Table:
    """Typed Arrow table from row dicts; ``defaults`` fill ts/node/job where a row lacks them."""
    if table not in catalogue:
        raise RowError(f"unknown table {table!r} (not in the catalogue)")
    schema = catalogue[table].arrow_schema
    known = set(schema.names)
    for r in rows[:1]:
        unknown = set(r) - known
        if unknown:
            raise RowError(
                f"table {table!r}: rows have columns the catalogue does not declare: {sorted(unknown)}"
            )
    try:
        return pa.Table.from_pylist([{**defaults, **r} for r in rows], schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError) as exc:
        raise RowError(f"table {table!r}: rows do not match the catalogue: {exc}") from None


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


def split_ipc(data: pa.Table, max_bytes: int) -> Iterator[bytes]:
    """Arrow IPC payloads of at most about ``max_bytes`` each (halving the rows until they fit)."""
    payload = encode_ipc(data)
    if len(payload) <= max_bytes or data.num_rows <= 1:
        yield payload
        return
    half = data.num_rows // 2
    yield from split_ipc(data.slice(0, half), max_bytes)
    yield from split_ipc(data.slice(half), max_bytes)


def utc_from_ns(now_ns: int) -> datetime:
    """Naive UTC datetime (the store's TIMESTAMP convention) from epoch nanoseconds."""
    return datetime.fromtimestamp(now_ns / 1e9, UTC).replace(tzinfo=None)
