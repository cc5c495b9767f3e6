"""Arrow IPC stream encoding shared by the wire's both ends."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.ipc as ipc


def encode_ipc(table: pa.Table | pa.RecordBatch) -> bytes:
    """Table or record batch -> Arrow IPC stream bytes."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write(table)
    return sink.getvalue().to_pybytes()


def split_ipc(data: pa.Table, max_bytes: int) -> Iterator[bytes]:
    """Arrow IPC payloads of at most about ``max_bytes`` each (halving the rows until they fit)."""
    payload = encode_ipc(data)
    if len(payload) <= max_bytes or data.num_rows <= 1:
        yield payload
        return
    half = data.num_rows // 2
    yield from split_ipc(data.slice(0, half), max_bytes)
    yield from split_ipc(data.slice(half), max_bytes)


def decode_ipc(payload: bytes) -> pa.Table:
    """Arrow IPC stream bytes -> table (raises pyarrow errors on corrupt input)."""
    return ipc.open_stream(pa.py_buffer(payload)).read_all()


#: Most messages (record batches, dictionaries) one payload may hold: each costs a few microseconds
#: of Python however small, and agents send one or a few.
MAX_MESSAGES = 4096


@dataclass(frozen=True)
class DecodeLimits:
    """How much one payload may decode to: rows (record batch rows and dictionary entries), bytes, messages."""

    max_rows: int
    max_bytes: int
    max_messages: int = MAX_MESSAGES


class DecodeLimitError(Exception):
    """A payload whose message metadata declares more rows or bytes than allowed (found before decoding)."""

    def __init__(self, what: str, declared: int, limit: int) -> None:
        super().__init__(f"payload decodes to {declared} {what}, over the limit of {limit}")
        self.what = what
        self.declared = declared
        self.limit = limit


# -- The IPC message metadata is a flatbuffer (Arrow's format/Message.fbs). pyarrow exposes its
# bytes but not its fields, so the few fields the limits need are read here, every offset checked
# (struct raises past the end; the one subtraction, to a vtable, is checked for a negative result):
# Message { version: short; header_type: ubyte; header: union; bodyLength: long; ... }
# RecordBatch { length: long; nodes: [FieldNode]; buffers: [Buffer{offset: long, length: long}];
#               compression: BodyCompression; ... }
# DictionaryBatch { id: long; data: RecordBatch; isDelta: bool }
_RECORD_BATCH, _DICTIONARY_BATCH = 3, 2
_U8, _U16, _I32, _U32, _I64 = (struct.Struct(f).unpack_from for f in ("<B", "<H", "<i", "<I", "<q"))
#: The 0xFFFFFFFF that starts every IPC message of the stream format (since Arrow 0.15).
_CONTINUATION = 0xFFFFFFFF
#: What may follow the one record batch of the common payload: end of stream, old and new forms, or nothing.
_STREAM_ENDS = (b"", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff\x00\x00\x00\x00")


def _field(meta, table: int, index: int) -> int:
    """Where field ``index`` of the flatbuffer table at ``table`` lies (0 when absent)."""
    vtable = table - _I32(meta, table)[0]
    if vtable < 0:
        raise struct.error("vtable before the start of the metadata")
    entry = 4 + 2 * index
    if entry + 2 > _U16(meta, vtable)[0]:
        return 0
    offset = _U16(meta, vtable + entry)[0]
    return table + offset if offset else 0


def _record_batch_size(meta, rb: int, body) -> tuple[int, int]:
    """(rows, bytes once decoded) of the RecordBatch table at ``rb``."""
    pos = _field(meta, rb, 0)
    rows = _I64(meta, pos)[0] if pos else 0
    if rows < 0:
        raise pa.ArrowInvalid(f"record batch declares {rows} rows")
    if not _field(meta, rb, 3):  # uncompressed: the arrays are slices of the body, nothing more
        return rows, len(body)
    pos = _field(meta, rb, 2)
    if not pos:
        return rows, 0
    vec = pos + _U32(meta, pos)[0]
    count = _U32(meta, vec)[0]
    if vec + 4 + 16 * count > len(meta):
        raise pa.ArrowInvalid("IPC message metadata is truncated (buffers)")
    decoded = 0
    for offset, length in struct.iter_unpack("<qq", meta[vec + 4 : vec + 4 + 16 * count]):
        if length == 0:
            continue
        if offset < 0 or length < 8 or offset + length > len(body):
            raise pa.ArrowInvalid("a compressed buffer lies outside the message body")
        # each compressed buffer starts with its uncompressed length (-1: stored uncompressed)
        size = _I64(body, offset)[0]
        if size < -1:
            raise pa.ArrowInvalid(f"a compressed buffer declares {size} bytes uncompressed")
        decoded += length - 8 if size == -1 else size
    return rows, decoded


def message_size(message: ipc.Message) -> tuple[int, int]:
    """(rows, bytes once decoded) of a record batch or dictionary batch message, from its metadata alone.

    Compressed buffers count their declared uncompressed length; uncompressed ones are the body.
    Other messages count (0, 0). Raises ArrowInvalid when the metadata does not parse.
    """
    return _metadata_size(memoryview(message.metadata), message.body)


def _metadata_size(meta, body) -> tuple[int, int]:
    """``message_size`` from a message's metadata bytes and its body (anything with ``size``)."""
    try:
        root = _U32(meta, 0)[0]
        pos = _field(meta, root, 1)
        kind = _U8(meta, pos)[0] if pos else 0
        if kind != _RECORD_BATCH and kind != _DICTIONARY_BATCH:
            return 0, 0
        pos = _field(meta, root, 2)
        if not pos:
            raise pa.ArrowInvalid("IPC message has no header")
        header = pos + _U32(meta, pos)[0]
        if kind == _DICTIONARY_BATCH:
            pos = _field(meta, header, 1)
            if not pos:
                raise pa.ArrowInvalid("dictionary batch has no data")
            header = pos + _U32(meta, pos)[0]
        return _record_batch_size(meta, header, body)
    except struct.error:
        raise pa.ArrowInvalid("IPC message metadata is truncated or holds an offset out of range") from None


def _record_batch_frame(payload, start: int) -> tuple[memoryview, int, int] | None:
    """The record batch message at ``start``: (metadata, body start, body end); None when it is another kind.

    Raises struct.error when the framing or the metadata runs past the end.
    """
    if _U32(payload, start)[0] != _CONTINUATION:
        return None
    meta_len = _I32(payload, start + 4)[0]
    meta_start = start + 8
    body_start = meta_start + meta_len
    if meta_len <= 0 or body_start > len(payload):
        return None
    meta = memoryview(payload)[meta_start:body_start]
    root = _U32(meta, 0)[0]
    pos = _field(meta, root, 1)
    if not pos or _U8(meta, pos)[0] != _RECORD_BATCH:
        return None
    pos = _field(meta, root, 3)
    body_len = _I64(meta, pos)[0] if pos else 0
    if body_len < 0 or body_start + body_len > len(payload):
        return None
    return meta, body_start, body_start + body_len


def _within(limits: DecodeLimits, rows: int, nbytes: int, messages: int) -> tuple[int, int]:
    """(rows, nbytes) when within ``limits``, else DecodeLimitError."""
    if messages > limits.max_messages:
        raise DecodeLimitError("messages", messages, limits.max_messages)
    if rows > limits.max_rows:
        raise DecodeLimitError("rows", rows, limits.max_rows)
    if nbytes > limits.max_bytes:
        raise DecodeLimitError("bytes", nbytes, limits.max_bytes)
    return rows, nbytes


class InvalidColumn(ValueError):
    """A decoded column whose values break the Arrow format (e.g. strings that are not UTF-8)."""

    def __init__(self, column: str, problem: str) -> None:
        super().__init__(f"column {column!r}: {problem}")
        self.column = column
        self.problem = problem


def _validate_full(data: pa.RecordBatch | pa.Table) -> None:
    """Every value valid (string columns UTF-8 included), or InvalidColumn naming the first bad column.

    One pass over the whole batch costs little more than the structural check alone.
    """
    try:
        data.validate(full=True)
    except pa.ArrowInvalid as exc:
        for name, column in zip(data.schema.names, data.columns, strict=True):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid as col_exc:
                raise InvalidColumn(name, str(col_exc)) from None
        raise exc from None


@dataclass(frozen=True, slots=True)
class Frame:
    """Where an agent's one-batch payload holds its record batch (``CachedSchemaDecoder.frame``)."""

    #: The schema message's metadata bytes (the decoder knows this schema).
    schema_key: bytes
    #: End of the schema message = start of the record batch message.
    schema_end: int
    #: End of the record batch message.
    body_end: int
    #: Rows the record batch declares.
    rows: int


class CachedSchemaDecoder:
    """Decodes Arrow IPC streams, parsing each distinct schema message once.

    Agents send thousands of small streams a second with a handful of schemas; parsing the schema
    of each was a third of the collector's decode time. The key returned with each table (the
    schema message's bytes) lets callers remember what they already checked about that schema.
    """

    def __init__(self, max_schemas: int = 1024) -> None:
        self.max_schemas = max_schemas
        self._schemas: dict[bytes, pa.Schema] = {}

    def frame(self, payload: bytes, limits: DecodeLimits | None) -> Frame | None:
        """Where the one record batch of what agents send lies (a known schema, one batch, the end), unread.

        None for any other stream (a schema not seen yet, several messages, dictionaries): those go
        through ``decode_spans``. With ``limits``, the batch's declared rows and bytes are checked
        (DecodeLimitError). Nothing is decoded or validated: ``decode_frames`` does that, for many
        payloads at once. Raises struct.error when the framing runs past the end.
        """
        if len(payload) < 16 or _U32(payload, 0)[0] != _CONTINUATION:
            return None
        schema_end = 8 + _I32(payload, 4)[0]
        key = bytes(payload[8:schema_end])  # a memoryview's slice is not hashable
        if key not in self._schemas:
            return None  # a schema not seen yet: the general reader parses and checks it once
        frame = _record_batch_frame(payload, schema_end)
        if frame is None or len(payload) - frame[2] > 8 or bytes(payload[frame[2] :]) not in _STREAM_ENDS:
            return None
        meta, body_start, body_end = frame
        rows, nbytes = _metadata_size(meta, memoryview(payload)[body_start:body_end])
        if limits is not None:
            _within(limits, rows, nbytes, 1)
        return Frame(key, schema_end, body_end, rows)

    def _decode_one_batch(
        self, payload: bytes, limits: DecodeLimits | None
    ) -> tuple[pa.Table, bytes, tuple[int, int]] | None:
        """``decode_spans`` of what agents send (a known schema, one record batch, the end): None otherwise.

        Reads the framing and the limits' fields itself and decodes the batch in one pyarrow call:
        the general reader's message objects cost more than the decoding of an agent's small batch.
        Every value is validated, as on the general path.
        """
        frame = self.frame(payload, limits)
        if frame is None:
            return None
        known = self._schemas[frame.schema_key]
        span = frame.body_end - frame.schema_end
        batch = ipc.read_record_batch(pa.py_buffer(payload).slice(frame.schema_end, span), known)
        _validate_full(batch)
        return pa.Table.from_batches([batch], known), frame.schema_key, (frame.schema_end, frame.body_end)

    def decode_frames(self, framed: Sequence[tuple[bytes, Frame]]) -> pa.Table:
        """Many framed payloads of one schema -> one table of one chunk, every value validated.

        Their record batch messages are joined after the schema message into one stream and read in
        one pyarrow call: per payload this costs a fraction of decoding each alone and concatenating.
        Raises pyarrow errors (or InvalidColumn) when any payload is corrupt, ValueError when the
        batches read do not match their frames; the caller then checks them one by one.
        """
        first_payload, first = framed[0]
        parts = [memoryview(first_payload)[: first.schema_end]]
        for payload, f in framed:
            if f.schema_key != first.schema_key:
                raise ValueError("framed payloads of different schemas")
            parts.append(memoryview(payload)[f.schema_end : f.body_end])
        parts.append(IPC_EOS)
        batches = list(ipc.open_stream(pa.py_buffer(b"".join(parts))))
        if len(batches) != len(framed) or any(
            b.num_rows != f.rows for b, (_, f) in zip(batches, framed, strict=True)
        ):
            raise ValueError("the record batches read do not match their frames")
        table = pa.Table.from_batches(batches, self._schemas[first.schema_key])
        _validate_full(table)  # before concatenating: offsets out of range must not be followed
        return table.combine_chunks()

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
        gigabytes): DecodeLimitError once they go over. Every decoded value is validated
        (InvalidColumn names a column whose strings are not UTF-8, say).

        The span is None unless the stream is a schema followed by record batches only (no
        dictionaries), so that its batch messages appended after the same schema message form a
        valid stream with the same rows: how a collector's ingest process merges many agents'
        batches without re-encoding them.
        """
        try:
            fast = self._decode_one_batch(payload, limits)
        except struct.error:
            fast = None  # framing the fast path does not follow: the general reader names the problem
        if fast is not None:
            return fast
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
        rows = nbytes = 0
        batches: list[pa.RecordBatch] = []
        body_end = schema_end
        while True:
            try:
                message = ipc.read_message(reader)
            except EOFError:
                break
            if limits is not None:
                r, b = message_size(message)
                rows, nbytes = _within(limits, rows + r, nbytes + b, len(batches) + 1)
            if message.type != "record batch":  # dictionaries and the like: the general reader
                count = len(batches) + 1
                while limits is not None:  # the rest of the stream within the limits first
                    try:
                        r, b = message_size(ipc.read_message(reader))
                    except EOFError:
                        break
                    count += 1
                    rows, nbytes = _within(limits, rows + r, nbytes + b, count)
                table = decode_ipc(payload)
                _ = table.schema.names
                _validate_full(table)
                return table, key, None
            batch = ipc.read_record_batch(message, schema)
            _validate_full(batch)
            batches.append(batch)
            body_end = reader.tell()
        return pa.Table.from_batches(batches, schema), key, (schema_end, body_end)


#: The end-of-stream marker of the Arrow IPC stream format (continuation, zero length).
IPC_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
