"""Arrow IPC stream encoding shared by the wire's both ends."""

from __future__ import annotations

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


class CachedSchemaDecoder:
    """Decodes Arrow IPC streams, parsing each distinct schema message once.

    Agents send thousands of small streams a second with a handful of schemas; parsing the schema
    of each was a third of the collector's decode time. The key returned with each table (the
    schema message's bytes) lets callers remember what they already checked about that schema.
    """

    def __init__(self, max_schemas: int = 1024) -> None:
        self.max_schemas = max_schemas
        self._schemas: dict[bytes, pa.Schema] = {}

    def decode(self, payload: bytes) -> tuple[pa.Table, bytes]:
        """Arrow IPC stream bytes -> (table, schema key); raises pyarrow errors on corrupt input."""
        table, key, _ = self.decode_spans(payload)
        return table, key

    def decode_spans(self, payload: bytes) -> tuple[pa.Table, bytes, tuple[int, int] | None]:
        """As ``decode``, plus where the record batches lie: ``(end of schema message, end of last batch)``.

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
        batches = []
        body_end = schema_end
        while True:
            try:
                message = ipc.read_message(reader)
            except EOFError:
                break
            if message.type != "record batch":  # dictionaries and the like: the general reader
                table = decode_ipc(payload)
                _ = table.schema.names
                return table, key, None
            batch = ipc.read_record_batch(message, schema)
            batch.validate()
            batches.append(batch)
            body_end = reader.tell()
        return pa.Table.from_batches(batches, schema), key, (schema_end, body_end)


#: The end-of-stream marker of the Arrow IPC stream format (continuation, zero length).
IPC_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
