"""Typed columns of Python values -> Arrow IPC stream bytes, without pyarrow.

The agent sends every batch as an Arrow IPC stream; pyarrow (~37 MiB resident with numpy) is what the
collector decodes them with, but an agent only writes a few small streams a second. The schema message
of each column list is written once by a small flatbuffers writer here (Arrow's format/Schema.fbs), cached;
nanoarrow, which wrote it before, cost the agent ~2 MiB resident for that alone. The record batch message
is built here too: its metadata is a fixed flatbuffer layout (Arrow's format/Message.fbs, below) and its
body the columns' buffers packed with ``array`` (nanoarrow's Python array builders cost ~30 µs a column,
~5 ms a flush of one 8-GPU node's tick: more than the agent's whole CPU budget).

Types are the catalogue's DuckDB names; ``X[]`` is a LIST of X (DuckDB's spelling), one level deep.
Values must already be what their Arrow type holds (the agent's batcher checks them): ints in range,
floats, str, bool, TIMESTAMP as int microseconds since the epoch (UTC), a list (or tuple) per LIST
cell; None is NULL everywhere, inside lists too.
"""

from __future__ import annotations

import functools
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import Any

#: Catalogue (DuckDB) type name -> (Arrow Schema.fbs Type union member, its fields), matching
#: ``c4.catalogue.ARROW_TYPES`` (pyarrow's): Int (bitWidth, is_signed), FloatingPoint (precision DOUBLE),
#: Utf8, Bool, Timestamp (unit MICROSECOND, no time zone).
_SCALAR_TYPES: dict[str, tuple[int, tuple]] = {
    "VARCHAR": (5, ()),
    "BOOLEAN": (6, ()),
    "INTEGER": (2, (32, True)),
    "BIGINT": (2, (64, True)),
    "UBIGINT": (2, (64, False)),
    "DOUBLE": (3, (2,)),
    "TIMESTAMP": (10, (2,)),
}
_TYPE_LIST = 12  # Schema.fbs: Type.List
_HEADER_SCHEMA = 1  # Message.fbs: MessageHeader.Schema
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


class FlatBuilder:
    """The few flatbuffers operations an Arrow schema message needs, written back to front as flatbuffers'
    own Builder does: strings, vectors of tables, tables of scalars and offsets with their vtables."""

    def __init__(self) -> None:
        self.buf = bytearray()  # the tail of the buffer: positions below are counted from its end

    def _pad(self, size: int, extra: int = 0) -> None:
        """Zeros so that ``extra`` bytes then a ``size``-byte value end aligned to ``size``."""
        self.buf[0:0] = bytes((-(len(self.buf) + extra + size)) % size)

    def _prepend(self, fmt: str, value: int) -> int:
        size = struct.calcsize(fmt)
        self._pad(size)
        self.buf[0:0] = struct.pack(fmt, value)
        return len(self.buf)

    def _uoffset(self, target: int) -> int:
        """A uoffset to the object at ``target``; returns where it sits."""
        self._pad(4)
        self.buf[0:0] = struct.pack("<I", len(self.buf) + 4 - target)
        return len(self.buf)

    def string(self, text: str) -> int:
        """A UTF-8 string (length, bytes, NUL); returns where it sits."""
        data = text.encode() + b"\x00"
        self._pad(4, len(data))
        self.buf[0:0] = data
        return self._prepend("<I", len(data) - 1)

    def vector(self, targets: list[int]) -> int:
        """A vector of uoffsets to ``targets`` (tables written before)."""
        self._pad(4, 4 * len(targets))
        for target in reversed(targets):
            self._uoffset(target)
        return self._prepend("<I", len(targets))

    def table(self, slots: list[tuple[int, str, int]]) -> int:
        """A table of (slot, struct format or 'offset', value) fields, with its vtable before it."""
        start = len(self.buf)
        at: dict[int, int] = {}
        for slot, fmt, value in sorted(
            slots, key=lambda s: -struct.calcsize("<I" if s[1] == "offset" else s[1])
        ):
            at[slot] = self._uoffset(value) if fmt == "offset" else self._prepend(fmt, value)
        table = self._prepend("<i", 0)  # soffset to the vtable, patched below
        n = max(at, default=-1) + 1
        fields = [table - at[i] if i in at else 0 for i in range(n)]
        vtable = struct.pack(f"<{2 + n}H", 4 + 2 * n, table - start, *fields)
        self.buf[0:0] = vtable
        vt = len(self.buf)
        struct.pack_into("<i", self.buf, len(self.buf) - table, vt - table)
        return table

    def finish(self, root: int) -> bytes:
        """The finished buffer: the root table's offset first, the whole 8-byte aligned."""
        self.buf[0:0] = bytes((-(len(self.buf) + 4)) % 8)
        self._uoffset(root)
        return bytes(self.buf)


def _type_table(b: FlatBuilder, type_name: str) -> tuple[int, int]:
    """(Type union member, its table) of a catalogue type (KeyError for one it does not know)."""
    if list_item_type(type_name) is not None:
        return _TYPE_LIST, b.table([])  # List {}
    member, args = _SCALAR_TYPES[type_name]
    if member == 2:  # Int { bitWidth: int; is_signed: bool }
        return member, b.table([(0, "<i", args[0]), (1, "<B", int(args[1]))])
    if member in (3, 10):  # FloatingPoint { precision: short }, Timestamp { unit: short; timezone } (naive)
        return member, b.table([(0, "<h", args[0])])
    return member, b.table([])  # Utf8 {}, Bool {}


def _field(b: FlatBuilder, name: str, type_name: str) -> int:
    """A Field table: name, nullable, its type, and for a LIST its one child field (named ``item``)."""
    item = list_item_type(type_name)
    children = b.vector([_field(b, "item", item)] if item is not None else [])
    member, type_at = _type_table(b, type_name)
    name_at = b.string(name)
    # Field { name; nullable; type_type; type; dictionary; children; custom_metadata }
    return b.table(
        [
            (0, "offset", name_at),
            (1, "<B", 1),
            (2, "<B", member),
            (3, "offset", type_at),
            (5, "offset", children),
        ]
    )


@functools.lru_cache(maxsize=256)
def schema_message(fields: tuple[tuple[str, str], ...]) -> bytes:
    """The IPC schema message (continuation, length, flatbuffer) of ``(name, type)`` fields, all nullable.

    Arrow's format/Schema.fbs and Message.fbs: a Message (version V5) whose header is a Schema
    (little-endian, the default) of the fields; checked against pyarrow's reading of it in the tests."""
    b = FlatBuilder()
    fields_at = b.vector([_field(b, name, type_name) for name, type_name in fields])
    schema_at = b.table(
        [(1, "offset", fields_at)]
    )  # Schema { endianness; fields; custom_metadata; features }
    # Message { version; header_type; header; bodyLength; custom_metadata }
    meta = b.finish(b.table([(0, "<h", _V5), (1, "<B", _HEADER_SCHEMA), (2, "offset", schema_at)]))
    meta += b"\x00" * (_pad8(len(meta)) - len(meta))
    return CONTINUATION + struct.pack("<i", len(meta)) + meta


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
