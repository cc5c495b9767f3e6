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
