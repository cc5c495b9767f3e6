"""Typed columns of Python values -> Arrow IPC stream bytes, without pyarrow.

The agent sends every batch as an Arrow IPC stream; pyarrow (~37 MiB resident with numpy) is what the
collector decodes them with, but an agent only writes a few small streams a second. The schema message
of each column list is written once by nanoarrow (Apache's small Arrow library) and cached. The record
batch message is built here: its metadata is a fixed flatbuffer layout (Arrow's format/Message.fbs,
below) and its body the columns' buffers packed with ``array``. nanoarrow can write the batch too, but its
Python array builders cost ~30 µs a column, ~5 ms a flush of one 8-GPU node's tick: more than the
agent's whole CPU budget.

Types are the catalogue's DuckDB names; ``X[]`` is a LIST of X (DuckDB's spelling), one level deep.
Values must already be what their Arrow type holds (the agent's batcher checks them): ints in range,
floats, str, bool, TIMESTAMP as int microseconds since the epoch (UTC), a list (or tuple) per LIST
cell; None is NULL everywhere, inside lists too.
"""

from __future__ import annotations

import functools
import io
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from itertools import accumulate
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
#: Fixed-width types -> ``array`` type code of their little-endian data buffer.
_ARRAY_CODES = {"INTEGER": "i", "BIGINT": "q", "UBIGINT": "Q", "DOUBLE": "d", "TIMESTAMP": "q"}
_FILL = {"INTEGER": 0, "BIGINT": 0, "UBIGINT": 0, "DOUBLE": 0.0, "TIMESTAMP": 0}
_SWAP = sys.byteorder != "little"  # Arrow IPC as written here is little-endian
assert array("i").itemsize == 4 and array("q").itemsize == 8

#: Columns: (name, catalogue type name, values), every values sequence the same length.
Columns = Sequence[tuple[str, str, Sequence[Any]]]

CONTINUATION = b"\xff\xff\xff\xff"
#: The end-of-stream marker (continuation, zero length).
EOS = CONTINUATION + b"\x00\x00\x00\x00"


def list_item_type(type_name: str) -> str | None:
    """The item type of a LIST type name (``UBIGINT[]`` -> ``UBIGINT``), else None."""
    return type_name[:-2] if type_name.endswith("[]") else None


def nanoarrow_type(type_name: str) -> Any:
    """The nanoarrow type of a catalogue type name (KeyError for one it does not know)."""
    item = list_item_type(type_name)
    if item is not None:
        return na.list_(_SCALAR_TYPES[item])
    return _SCALAR_TYPES[type_name]


@functools.lru_cache(maxsize=256)
def schema_message(fields: tuple[tuple[str, str], ...]) -> bytes:
    """The IPC schema message (continuation, length, flatbuffer) of ``(name, type)`` fields, all nullable.

    Written by nanoarrow from an empty stream of that schema: its first message."""
    schema = na.struct({name: nanoarrow_type(type_name) for name, type_name in fields})
    empty = na.c_array_from_buffers(
        schema, length=0, buffers=[None], children=[na.c_array([], nanoarrow_type(t)) for _, t in fields]
    )
    out = io.BytesIO()
    with StreamWriter.from_writable(out) as writer:
        writer.write_stream(empty)
    data = out.getvalue()
    if data[:4] != CONTINUATION:
        raise ValueError("nanoarrow wrote a stream without the continuation marker")
    (length,) = struct.unpack_from("<i", data, 4)
    return data[: 8 + length]


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def _validity(values: Sequence[Any]) -> bytes:
    """The validity bitmap (bit i set: value i is not NULL), least significant bit first."""
    bits = "".join("0" if v is None else "1" for v in reversed(values))
    return int(bits, 2).to_bytes((len(values) + 7) // 8, "little")


def _bitmap(values: Sequence[Any]) -> bytes:
    """A BOOLEAN column's data bitmap (NULL as 0)."""
    bits = "".join("1" if v else "0" for v in reversed(values))
    return int(bits or "0", 2).to_bytes((len(values) + 7) // 8, "little")


def _packed(code: str, values: Sequence[Any]) -> bytes:
    data = array(code, values)
    if _SWAP:
        data.byteswap()
    return data.tobytes()


def _offsets(lengths: Iterator[int] | Sequence[int]) -> bytes:
    """An int32 offsets buffer from item lengths."""
    offsets = array("i", [0])
    offsets.extend(accumulate(lengths))
    if offsets[-1] > 2**31 - 1:
        raise OverflowError("a column's data is over 2 GiB (int32 offsets)")
    if _SWAP:
        offsets.byteswap()
    return offsets.tobytes()


def _column(
    type_name: str, values: Sequence[Any], nodes: list[tuple[int, int]], buffers: list[bytes]
) -> None:
    """Append one column's field nodes (length, null count) and buffers, depth first."""
    nulls = values.count(None) if isinstance(values, list) else sum(v is None for v in values)
    nodes.append((len(values), nulls))
    buffers.append(_validity(values) if nulls else b"")
    item = list_item_type(type_name)
    if item is not None:
        cells = [() if v is None else v for v in values] if nulls else values
        buffers.append(_offsets(map(len, cells)))
        _column(item, [x for cell in cells for x in cell], nodes, buffers)
    elif type_name == "VARCHAR":
        data = [b"" if v is None else v.encode() for v in values]
        buffers.append(_offsets(map(len, data)))
        buffers.append(b"".join(data))
    elif type_name == "BOOLEAN":
        buffers.append(_bitmap(values))
    else:
        if nulls:
            fill = _FILL[type_name]
            values = [fill if v is None else v for v in values]
        buffers.append(_packed(_ARRAY_CODES[type_name], values))


# Message { version: short; header_type: ubyte; header: RecordBatch; bodyLength: long }
# RecordBatch { length: long; nodes: [FieldNode{length: long; null_count: long}];
#               buffers: [Buffer{offset: long; length: long}] }
# Laid out front to back: root offset, Message's vtable and table, RecordBatch's vtable and table,
# then the two struct vectors (each element 8-aligned). Every offset points forward, as flatbuffers need.
_MESSAGE_HEAD = struct.Struct("<I6H iHBxqI4x")  # root, Message vtable (4 fields), Message table
_BATCH_HEAD = struct.Struct("<5H6x iIqI4x")  # RecordBatch vtable (3 fields), RecordBatch table
_V5, _RECORD_BATCH = 4, 3


def _record_batch_metadata(
    num_rows: int, nodes: list[tuple[int, int]], spans: list[tuple[int, int]], body: int
):
    """The flatbuffer of a RecordBatch message."""
    msg_vt, msg_tbl = 4, 16  # positions
    rb_vt, rb_tbl = 40, 56
    nodes_len = 88  # the nodes vector's length word sits at 84, its elements from 88
    buffers_len = 88 + 16 * len(nodes)  # then 4 bytes of padding, the buffers' length word, elements
    head = _MESSAGE_HEAD.pack(
        msg_tbl,  # root: the Message table
        12,
        24,
        4,
        6,
        16,
        8,  # vtable: size, table size, version@4, header_type@6, header@16, bodyLength@8
        msg_tbl - msg_vt,
        _V5,
        _RECORD_BATCH,
        body,
        rb_tbl - 32,  # table; header offset from its field at 32
    )
    batch = _BATCH_HEAD.pack(
        10,
        24,
        8,
        4,
        16,  # vtable: size, table size, length@8, nodes@4, buffers@16
        rb_tbl - rb_vt,
        nodes_len - 4 - 60,
        num_rows,
        buffers_len + 4 - 72,  # nodes from 60, buffers from 72
    )
    vectors = struct.pack(
        f"<4xI{2 * len(nodes)}q4xI{2 * len(spans)}q", len(nodes), *_flat(nodes), len(spans), *_flat(spans)
    )
    return head + batch + vectors


def _flat(pairs: list[tuple[int, int]]) -> list[int]:
    return [x for pair in pairs for x in pair]


def record_batch_message(columns: Columns, num_rows: int) -> bytes:
    """The IPC record batch message (continuation, length, flatbuffer, body) of ``columns``."""
    nodes: list[tuple[int, int]] = []
    buffers: list[bytes] = []
    for _, type_name, values in columns:
        if len(values) != num_rows:
            raise ValueError(f"a column has {len(values)} values, the batch {num_rows} rows")
        _column(type_name, values, nodes, buffers)
    spans: list[tuple[int, int]] = []
    body = bytearray()
    for buf in buffers:
        spans.append((len(body), len(buf)))
        body += buf
        body += b"\x00" * (_pad8(len(body)) - len(body))
    meta = _record_batch_metadata(num_rows, nodes, spans, len(body))
    meta += b"\x00" * (_pad8(len(meta)) - len(meta))
    return CONTINUATION + struct.pack("<i", len(meta)) + meta + body


def encode_columns(columns: Columns, num_rows: int) -> bytes:
    """One Arrow IPC stream (schema, one record batch, end marker) holding ``columns``."""
    schema = schema_message(tuple((name, type_name) for name, type_name, _ in columns))
    return schema + record_batch_message(columns, num_rows) + EOS


def split_columns(columns: Columns, num_rows: int, max_bytes: int) -> Iterator[bytes]:
    """IPC streams of at most about ``max_bytes`` each, halving the rows until they fit."""
    payload = encode_columns(columns, num_rows)
    if len(payload) <= max_bytes or num_rows <= 1:
        yield payload
        return
    half = num_rows // 2
    yield from split_columns([(n, t, v[:half]) for n, t, v in columns], half, max_bytes)
    yield from split_columns([(n, t, v[half:]) for n, t, v in columns], num_rows - half, max_bytes)
