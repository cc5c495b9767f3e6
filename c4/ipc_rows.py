"""Typed columns of Python values -> Arrow IPC stream bytes, written with nanoarrow instead of pyarrow.

The agent sends every batch as an Arrow IPC stream; pyarrow (~37 MiB resident with numpy) is what the
collector decodes them with, but an agent only needs to write a few small streams a second. nanoarrow's
Python package (a few MiB) builds the arrays and writes the stream. Types are the catalogue's DuckDB
names; ``X[]`` is a LIST of X (DuckDB's spelling), one level deep.

Values must already be what their Arrow type holds (the agent's batcher checks them): ints in range,
floats, str, bool, TIMESTAMP as int microseconds since the epoch (UTC), a list (or tuple) per LIST cell;
None is NULL everywhere, inside lists too.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import nanoarrow as na
from nanoarrow.ipc import StreamWriter

#: Catalogue (DuckDB) type name -> nanoarrow type, matching ``c4.catalogue.ARROW_TYPES`` (pyarrow's).
_SCALAR_TYPES: dict[str, Any] = {
    "VARCHAR": na.string(),
    "BOOLEAN": na.bool_(),
    "INTEGER": na.int32(),
    "BIGINT": na.int64(),
    "UBIGINT": na.uint64(),
    "DOUBLE": na.float64(),
    "TIMESTAMP": na.timestamp("us"),
}

#: Columns: (name, catalogue type name, values), every values sequence the same length.
Columns = Sequence[tuple[str, str, Sequence[Any]]]


def list_item_type(type_name: str) -> str | None:
    """The item type of a LIST type name (``UBIGINT[]`` -> ``UBIGINT``), else None."""
    return type_name[:-2] if type_name.endswith("[]") else None


def nanoarrow_type(type_name: str) -> Any:
    """The nanoarrow type of a catalogue type name (KeyError for one it does not know)."""
    item = list_item_type(type_name)
    if item is not None:
        return na.list_(_SCALAR_TYPES[item])
    return _SCALAR_TYPES[type_name]


def _list_array(type_name: str, values: Sequence[Any]) -> Any:
    """A LIST array from one list (or None) per row: offsets, validity and the flattened items."""
    item = list_item_type(type_name)
    offsets = [0]
    valid: list[bool] = []
    flat: list[Any] = []
    for cell in values:
        if cell is None:
            valid.append(False)
        else:
            valid.append(True)
            flat.extend(cell)
        offsets.append(len(flat))
    validity = None if all(valid) else na.c_buffer(valid, na.bool_())
    return na.c_array_from_buffers(
        nanoarrow_type(type_name),
        length=len(values),
        buffers=[validity, na.c_buffer(offsets, na.int32())],
        children=[na.c_array(flat, _SCALAR_TYPES[item])],
    )


def column_array(type_name: str, values: Sequence[Any]) -> Any:
    """One column as a nanoarrow C array (ValueError naming the problem if a value does not fit)."""
    if list_item_type(type_name) is not None:
        return _list_array(type_name, values)
    return na.c_array(values, _SCALAR_TYPES[type_name])


def encode_columns(columns: Columns, num_rows: int) -> bytes:
    """One Arrow IPC stream (schema, one record batch, end marker) holding ``columns``."""
    schema = na.struct({name: nanoarrow_type(type_name) for name, type_name, _ in columns})
    children = [column_array(type_name, values) for _, type_name, values in columns]
    batch = na.c_array_from_buffers(schema, length=num_rows, buffers=[None], children=children)
    out = io.BytesIO()
    with StreamWriter.from_writable(out) as writer:
        writer.write_stream(batch)
    return out.getvalue()


def split_columns(columns: Columns, num_rows: int, max_bytes: int) -> Iterator[bytes]:
    """IPC streams of at most about ``max_bytes`` each, halving the rows until they fit."""
    payload = encode_columns(columns, num_rows)
    if len(payload) <= max_bytes or num_rows <= 1:
        yield payload
        return
    half = num_rows // 2
    yield from split_columns([(n, t, v[:half]) for n, t, v in columns], half, max_bytes)
    yield from split_columns([(n, t, v[half:]) for n, t, v in columns], num_rows - half, max_bytes)
