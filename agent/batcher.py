"""Turns sampler rows into typed columns per catalogue table, and those into sized Arrow IPC batches.

Nothing here imports pyarrow: the columns are checked in Python (each value against its catalogue type,
as pyarrow would) and written by ``c4.ipc_rows`` (no Arrow library). ``ColumnBatch.to_arrow`` gives a pyarrow
table for the tools and tests that want one, importing pyarrow only then.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from c4.catalogue import Catalogue, TableSpec
from c4.ipc_rows import list_item_type, split_columns

if TYPE_CHECKING:
    import pyarrow as pa


class RowError(ValueError):
    """A sampler produced rows that do not fit the catalogue; names the table and problem."""


_INT_RANGES = {"INTEGER": (-(2**31), 2**31 - 1), "BIGINT": (-(2**63), 2**63 - 1), "UBIGINT": (0, 2**64 - 1)}
#: Integers a DOUBLE column takes exactly (pyarrow refuses larger ones rather than round them).
_EXACT_DOUBLE_INT = 2**53
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


def _check_int(type_name: str):
    lo, hi = _INT_RANGES[type_name]

    def check(v: Any) -> int:
        if type(v) is not int:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError(f"expected an integer, got {type(v).__name__} {v!r}")
            if isinstance(v, float) and not v.is_integer():
                raise ValueError(f"{v!r} is not a whole number")
            v = int(v)
        if not lo <= v <= hi:
            raise OverflowError(f"{v} is out of range for {type_name}")
        return v

    return check


def _check_double(v: Any) -> float:
    if type(v) is float:
        return v
    if isinstance(v, int | float):  # bool included, as pyarrow takes it
        if isinstance(v, int) and abs(v) > _EXACT_DOUBLE_INT:
            raise ValueError(f"integer {v} is not exactly representable as a DOUBLE")
        return float(v)
    raise TypeError(f"expected a number, got {type(v).__name__} {v!r}")


def _check_str(v: Any) -> str:
    if type(v) is str:
        if not v.isascii():
            v.encode()  # UnicodeEncodeError for a lone surrogate: not UTF-8
        return v
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, str):
        return str(v)
    raise TypeError(f"expected a string, got {type(v).__name__} {v!r}")


def _check_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise TypeError(f"expected a boolean, got {type(v).__name__} {v!r}")


def timestamp_us(v: Any) -> int:
    """A TIMESTAMP value as microseconds since the epoch: naive datetimes are UTC, aware ones converted."""
    if isinstance(v, datetime):
        if v.tzinfo is None:
            delta = v - _EPOCH
        else:
            delta = v - _EPOCH_UTC
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(v, int) and not isinstance(v, bool):
        if not -(2**63) <= v < 2**63:
            raise OverflowError(f"{v} is out of range for TIMESTAMP")
        return v
    if isinstance(v, date):
        raise TypeError(f"expected a datetime, got a date {v!r}")
    raise TypeError(f"expected a datetime, got {type(v).__name__} {v!r}")


_SCALAR_CHECKS = {
    "VARCHAR": _check_str,
    "BOOLEAN": _check_bool,
    "INTEGER": _check_int("INTEGER"),
    "BIGINT": _check_int("BIGINT"),
    "UBIGINT": _check_int("UBIGINT"),
    "DOUBLE": _check_double,
    "TIMESTAMP": timestamp_us,
}


def _check_list(item_type: str):
    item = _SCALAR_CHECKS[item_type]

    def check(v: Any) -> list:
        if not isinstance(v, list | tuple):
            raise TypeError(f"expected a list, got {type(v).__name__} {v!r}")
        return [None if x is None else item(x) for x in v]

    return check


def value_check(type_name: str):
    """The function that checks (and normalizes) one non-NULL value of a catalogue type."""
    item = list_item_type(type_name)
    return _check_list(item) if item is not None else _SCALAR_CHECKS[type_name]


@dataclass
class ColumnBatch:
    """Rows of one catalogue table as checked columns of Python values (TIMESTAMP as int µs)."""

    spec: TableSpec
    columns: list[list[Any]]  # one list per catalogue column, in declaration order
    num_rows: int

    @property
    def column_names(self) -> list[str]:
        """Column names in declaration order."""
        return self.spec.column_names

    def column(self, name: str) -> list[Any]:
        """One column's values."""
        return self.columns[self.spec.column_names.index(name)]

    def extend(self, other: ColumnBatch) -> None:
        """Append another batch of the same table."""
        for mine, theirs in zip(self.columns, other.columns, strict=True):
            mine.extend(theirs)
        self.num_rows += other.num_rows

    def to_ipc(self, max_bytes: int) -> Iterator[bytes]:
        """Arrow IPC stream payloads of at most about ``max_bytes`` each (fewer rows each until they fit)."""
        cols = [(c.name, c.sql_type, v) for c, v in zip(self.spec.columns, self.columns, strict=True)]
        yield from split_columns(cols, self.num_rows, max_bytes)

    def to_arrow(self) -> pa.Table:
        """The rows as a pyarrow table with the catalogue's schema (imports pyarrow: not for the agent)."""
        import pyarrow as pa  # lazy: the agent never loads pyarrow (~37 MiB resident)

        schema = self.spec.arrow_schema
        return pa.Table.from_arrays(
            [pa.array(v, type=f.type) for v, f in zip(self.columns, schema, strict=True)], schema=schema
        )


@dataclass(frozen=True)
class Converted:
    """Rows as typed columns, with the rows that did not fit left out and counted."""

    batch: ColumnBatch
    dropped: int = 0
    first_error: str = ""  # why the first dropped row did not fit ('' when none was dropped)

    @property
    def table(self) -> pa.Table:
        """The kept rows as a pyarrow table (imports pyarrow)."""
        return self.batch.to_arrow()


def _fast_ok(type_name: str, values: list[Any]) -> bool:
    """True when every value already is what its column holds (checked at C speed, no copy needed)."""
    present = [v for v in values if v is not None]
    if not present:
        return True
    types = set(map(type, present))
    item = list_item_type(type_name)
    if item is not None:  # a LIST column: every cell a list, every element what the item type holds
        return types == {list} and _fast_ok(item, list(chain.from_iterable(present)))
    if type_name in _INT_RANGES:
        lo, hi = _INT_RANGES[type_name]
        return types == {int} and lo <= min(present) and max(present) <= hi
    if type_name == "DOUBLE":
        return types == {float}
    if type_name == "VARCHAR":
        return types == {str} and all(map(str.isascii, present))
    if type_name == "BOOLEAN":
        return types == {bool}
    return False


def _checked_column(type_name: str, check: Any, values: list[Any], on_bad: Any) -> list[Any]:
    """Values checked and normalized; ``on_bad(position, message)`` for each that does not fit (kept as None)."""
    if _fast_ok(type_name, values):
        return values
    out: list[Any] = []
    last_in: Any = None
    last_out: Any = None
    for j, v in enumerate(values):
        if v is None:
            out.append(None)
        elif v is last_in:  # the same object again (a default such as ts): checked once
            out.append(last_out)
        else:
            try:
                last_out = check(v)
                last_in = v
            except (TypeError, ValueError, OverflowError, AttributeError) as exc:
                on_bad(j, str(exc) or type(exc).__name__)
                last_in = last_out = None
                out.append(None)
                continue
            out.append(last_out)
    return out


class _TableChecks:
    """Per-column value checks of one table, built once per table spec."""

    def __init__(self, spec: TableSpec) -> None:
        self.names = spec.column_names
        self.types = [c.sql_type for c in spec.columns]
        self.checks = [value_check(c.sql_type) for c in spec.columns]
        self.known = frozenset(self.names)


_CHECKS: dict[int, tuple[TableSpec, _TableChecks]] = {}


def _checks_of(spec: TableSpec) -> _TableChecks:
    """The cached checks of a table spec (keyed by identity; the spec is kept alive with them)."""
    hit = _CHECKS.get(id(spec))
    if hit is None or hit[0] is not spec:
        hit = (spec, _TableChecks(spec))
        _CHECKS[id(spec)] = hit
    return hit[1]


def _raw_columns(
    names: list[str], rows: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any]
) -> list[list]:
    """Rows -> one list of values per column (a row's missing column takes the default, else None).

    Rows of one sampler tick mostly have the same keys: then the columns come out of one C-level
    transpose (itemgetter, zip) instead of a dict lookup per value in Python."""
    n = len(rows)
    if n and isinstance(rows[0], dict):
        keys = rows[0].keys()
        if all(type(r) is dict and r.keys() == keys for r in rows):
            present = [name for name in names if name in keys]
            by_name: dict[str, list] = {}
            if len(present) > 1:
                by_name = dict(
                    zip(present, map(list, zip(*map(itemgetter(*present), rows), strict=True)), strict=True)
                )
            elif present:
                by_name = {present[0]: [r[present[0]] for r in rows]}
            return [by_name[name] if name in by_name else [defaults.get(name)] * n for name in names]
    return [[r.get(name, defaults.get(name)) for r in rows] for name in names]


def convert_rows(
    catalogue: Catalogue, table: str, rows: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any]
) -> Converted:
    """Typed columns from row dicts; ``defaults`` fill ts/node/job where a row lacks them.

    A row that does not fit (a value out of its column's range, a wrong type, a column the catalogue
    does not declare) is left out and counted alone; the other rows are kept. Raises RowError only
    for a table the catalogue does not know.
    """
    if table not in catalogue:
        raise RowError(f"unknown table {table!r} (not in the catalogue)")
    spec = catalogue[table]
    checks = _checks_of(spec)
    bad: dict[int, str] = {}  # row index -> why it does not fit (the first reason found)
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            bad[i] = f"not a row (a {type(r).__name__}, not a mapping of column to value)"
        elif not checks.known.issuperset(r):
            bad[i] = f"columns the catalogue does not declare: {sorted(set(r) - checks.known)}"
    index = [i for i in range(len(rows)) if i not in bad] if bad else range(len(rows))
    good = [rows[i] for i in index] if bad else rows
    raw = _raw_columns(checks.names, good, defaults)
    columns: list[list[Any]] = []
    for name, type_name, check, values in zip(checks.names, checks.types, checks.checks, raw, strict=True):

        def on_bad(j: int, message: str, name: str = name) -> None:
            bad.setdefault(index[j], f"column {name!r}: {message}")

        columns.append(_checked_column(type_name, check, values, on_bad))
    if not bad:
        return Converted(ColumnBatch(spec, columns, len(rows)))
    keep = [j for j, i in enumerate(index) if i not in bad]
    columns = [[col[j] for j in keep] for col in columns]
    first = min(bad)
    first_error = (
        f"table {table!r}: row {first} does not fit the catalogue, dropped: {bad[first]} "
        f"({len(bad)} of {len(rows)} rows dropped)"
    )
    return Converted(ColumnBatch(spec, columns, len(keep)), len(bad), first_error)


def rows_to_batch(
    catalogue: Catalogue, table: str, rows: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any]
) -> ColumnBatch:
    """As ``convert_rows``, all or nothing: raises RowError naming the first row that does not fit."""
    out = convert_rows(catalogue, table, rows, defaults)
    if out.dropped:
        raise RowError(out.first_error)
    return out.batch


def rows_to_table(
    catalogue: Catalogue, table: str, rows: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any]
) -> pa.Table:
    """As ``rows_to_batch``, as a pyarrow table (for tools and tests; imports pyarrow)."""
    return rows_to_batch(catalogue, table, rows, defaults).to_arrow()


class TableBuffer:
    """Accumulates checked rows per target table until flushed."""

    def __init__(self) -> None:
        self._parts: dict[str, ColumnBatch] = {}
        self.rows = 0

    def add(self, table: str, data: ColumnBatch) -> None:
        """Queue rows for a table (the buffer keeps its own copy of the columns)."""
        if not data.num_rows:
            return
        held = self._parts.get(table)
        if held is None:
            self._parts[table] = ColumnBatch(data.spec, [list(c) for c in data.columns], data.num_rows)
        else:
            held.extend(data)
        self.rows += data.num_rows

    def drain(self) -> Iterator[tuple[str, ColumnBatch]]:
        """Everything queued, one batch per target table; empties the buffer."""
        parts, self._parts, self.rows = self._parts, {}, 0
        yield from parts.items()


def utc_from_ns(now_ns: int) -> datetime:
    """Naive UTC datetime (the store's TIMESTAMP convention) from epoch nanoseconds."""
    return datetime.fromtimestamp(now_ns / 1e9, UTC).replace(tzinfo=None)
