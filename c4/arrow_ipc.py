"""Arrow IPC stream encoding shared by the wire's both ends."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.ipc as ipc


def encode_ipc(table: pa.Table | pa.RecordBatch) -> bytes:
    """Table or record batch -> Arrow IPC stream bytes."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write(table)
    return sink.getvalue().to_pybytes()


def decode_ipc(payload: bytes) -> pa.Table:
    """Arrow IPC stream bytes -> table (raises pyarrow errors on corrupt input)."""
    return ipc.open_stream(pa.py_buffer(payload)).read_all()


@dataclass(frozen=True)
class DecodeLimits:
    """How much one payload may decode to: rows (record batch rows and dictionary entries) and bytes."""

    max_rows: int
    max_bytes: int


class DecodeLimitError(Exception):
    """A payload whose message metadata declares more rows or bytes than allowed (found before decoding)."""

    def __init__(self, what: str, declared: int, limit: int) -> None:
        super().__init__(f"payload decodes to {declared} {what}, over the limit of {limit}")
        self.what = what
        self.declared = declared
        self.limit = limit


# -- The IPC message metadata is a flatbuffer (Arrow's format/Message.fbs). pyarrow exposes its
# bytes but not its fields, so the few fields the limits need are read here, every offset checked:
# Message { version: short; header_type: ubyte; header: union; bodyLength: long; ... }
# RecordBatch { length: long; nodes: [FieldNode{length, null_count}]; buffers: [Buffer{offset, length}];
#               compression: BodyCompression; ... }
# DictionaryBatch { id: long; data: RecordBatch; isDelta: bool }
_RECORD_BATCH, _DICTIONARY_BATCH = 3, 2
_U8, _U16, _I32, _U32, _I64 = (struct.Struct(f) for f in ("<B", "<H", "<i", "<I", "<q"))


def _read(fmt: struct.Struct, buf, pos: int) -> int:
    if pos < 0 or pos + fmt.size > len(buf):
        raise pa.ArrowInvalid("IPC message metadata is truncated or holds an offset out of range")
    return fmt.unpack_from(buf, pos)[0]


def _field(buf, table: int, index: int) -> int | None:
    """Where field ``index`` of the flatbuffer table at ``table`` lies (None when absent)."""
    vtable = table - _read(_I32, buf, table)
    entry = 4 + 2 * index
    if entry + 2 > _read(_U16, buf, vtable):
        return None
    offset = _read(_U16, buf, vtable + entry)
    return table + offset if offset else None


def _deref(buf, pos: int) -> int:
    """Follow the offset stored at ``pos`` (to a table or a vector)."""
    return pos + _read(_U32, buf, pos)


def _record_batch_size(meta, rb: int, body: pa.Buffer) -> tuple[int, int]:
    """(rows, bytes once decoded) of the RecordBatch table at ``rb``."""
    pos = _field(meta, rb, 0)
    rows = _read(_I64, meta, pos) if pos is not None else 0
    if rows < 0:
        raise pa.ArrowInvalid(f"record batch declares {rows} rows")
    if _field(meta, rb, 3) is None:  # uncompressed: the arrays are slices of the body, nothing more
        return rows, body.size
    pos = _field(meta, rb, 2)
    if pos is None:
        return rows, 0
    vec = _deref(meta, pos)
    count = _read(_U32, meta, vec)
    if vec + 4 + 16 * count > len(meta):
        raise pa.ArrowInvalid("IPC message metadata is truncated (buffers)")
    decoded = 0
    for offset, length in struct.iter_unpack("<qq", meta[vec + 4 : vec + 4 + 16 * count]):
        if length == 0:
            continue
        if offset < 0 or length < 8 or offset + length > body.size:
            raise pa.ArrowInvalid("a compressed buffer lies outside the message body")
        # each compressed buffer starts with its uncompressed length (-1: stored uncompressed)
        size = _I64.unpack_from(body, offset)[0]
        if size < -1:
            raise pa.ArrowInvalid(f"a compressed buffer declares {size} bytes uncompressed")
        decoded += length - 8 if size == -1 else size
    return rows, decoded


def message_size(message: ipc.Message) -> tuple[int, int]:
    """(rows, bytes once decoded) of a record batch or dictionary batch message, from its metadata alone.

    Compressed buffers count their declared uncompressed length; uncompressed ones are the body.
    Other messages count (0, 0). Raises ArrowInvalid when the metadata does not parse.
    """
    meta = memoryview(message.metadata)
    root = _read(_U32, meta, 0)
    pos = _field(meta, root, 1)
    kind = _read(_U8, meta, pos) if pos is not None else 0
    if kind not in (_RECORD_BATCH, _DICTIONARY_BATCH):
        return 0, 0
    pos = _field(meta, root, 2)
    if pos is None:
        raise pa.ArrowInvalid("IPC message has no header")
    header = _deref(meta, pos)
    if kind == _DICTIONARY_BATCH:
        pos = _field(meta, header, 1)
        if pos is None:
            raise pa.ArrowInvalid("dictionary batch has no data")
        header = _deref(meta, pos)
    return _record_batch_size(meta, header, message.body)


class _Budget:
    """What the messages read so far decode to, against the limits."""

    def __init__(self, limits: DecodeLimits | None) -> None:
        self.limits = limits
        self.rows = 0
        self.bytes = 0

    def add(self, message: ipc.Message) -> None:
        if self.limits is None:
            return
        rows, nbytes = message_size(message)
        self.rows += rows
        self.bytes += nbytes
        if self.rows > self.limits.max_rows:
            raise DecodeLimitError("rows", self.rows, self.limits.max_rows)
        if self.bytes > self.limits.max_bytes:
            raise DecodeLimitError("bytes", self.bytes, self.limits.max_bytes)


class CachedSchemaDecoder:
    """Decodes Arrow IPC streams, parsing each distinct schema message once.

    Agents send thousands of small streams a second with a handful of schemas; parsing the schema
    of each was a third of the collector's decode time. The key returned with each table (the
    schema message's bytes) lets callers remember what they already checked about that schema.
    """

    def __init__(self, max_schemas: int = 1024) -> None:
        self.max_schemas = max_schemas
        self._schemas: dict[bytes, pa.Schema] = {}

    def decode(self, payload: bytes, limits: DecodeLimits | None = None) -> tuple[pa.Table, bytes]:
        """Arrow IPC stream bytes -> (table, schema key); raises pyarrow errors on corrupt input."""
        table, key, _ = self.decode_spans(payload, limits)
        return table, key

    def decode_spans(
        self, payload: bytes, limits: DecodeLimits | None = None
    ) -> tuple[pa.Table, bytes, tuple[int, int] | None]:
        """As ``decode``, plus where the record batches lie: ``(end of schema message, end of last batch)``.

        With ``limits``, every batch's declared rows and decoded bytes are added up from its
        message metadata before it is decoded (a compressed payload of kilobytes can declare
        gigabytes): DecodeLimitError once they go over.

        The span is None unless the stream is a schema followed by record batches only (no
        dictionaries), so that its batch messages appended after the same schema message form a
        valid stream with the same rows: how a collector's ingest process merges many agents'
        batches without re-encoding them.
        """
        reader = pa.BufferReader(payload)
        first = ipc.read_message(reader)
        if first.type != "schema":
            raise pa.ArrowInvalid(f"Arrow IPC stream starts with a {first.type} message, not a schema")
        schema_end = reader.tell()
        key = first.metadata.to_pybytes()
        schema = self._schemas.get(key)
        if schema is None:
            schema = ipc.read_schema(first)
            _ = schema.names, [str(f.type) for f in schema]  # a damaged name fails here (ValueError), once
            if len(self._schemas) >= self.max_schemas:
                self._schemas.clear()
            self._schemas[key] = schema
        budget = _Budget(limits)
        batches = []
        body_end = schema_end
        while True:
            try:
                message = ipc.read_message(reader)
            except EOFError:
                break
            budget.add(message)
            if message.type != "record batch":  # dictionaries and the like: the general reader
                while True:  # the rest of the stream within the limits first
                    try:
                        budget.add(ipc.read_message(reader))
                    except EOFError:
                        break
                table = decode_ipc(payload)
                _ = table.schema.names
                table.validate()
                return table, key, None
            batch = ipc.read_record_batch(message, schema)
            batch.validate()
            batches.append(batch)
            body_end = reader.tell()
        return pa.Table.from_batches(batches, schema), key, (schema_end, body_end)


#: The end-of-stream marker of the Arrow IPC stream format (continuation, zero length).
IPC_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
