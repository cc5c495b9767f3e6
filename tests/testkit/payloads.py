"""Arrow payloads for ingest tests: valid heartbeat batches and the hostile shapes the collector must refuse."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.ipc as ipc

from c4.arrow_ipc import encode_ipc
from c4.catalogue import load
from c4.telemetry.v1 import telemetry_pb2 as pb

HEARTBEAT = load()["agent_heartbeat"]


def catalogue_table(name: str, cols: dict) -> pa.Table:
    """A table of the catalogue's ``name`` from column lists (``cols`` must hold ``ts``); columns not
    given are all NULL."""
    schema = load()[name].arrow_schema
    n = len(cols["ts"])
    arrays = [pa.array(cols[f.name], f.type) if f.name in cols else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def utcnow() -> datetime:
    """Now, UTC, naive (as the store keeps times)."""
    return datetime.now(UTC).replace(tzinfo=None)


def heartbeat_rows(node: str, ticks, ts: datetime | None = None) -> pa.Table:
    """Heartbeat rows of one node, one per tick, dated ``ts`` (default: now)."""
    ts = ts or utcnow()
    rows = [
        {"ts": ts, "node": node, "job": "", "agent_id": node, "boot_ns": 1, "tick": t, "uptime_s": 0.0}
        for t in ticks
    ]
    return pa.Table.from_pylist(rows, schema=HEARTBEAT.arrow_schema)


def batch(
    agent_id: str, seq: int, payload: bytes, table: str = "agent_heartbeat", version: int = 1
) -> pb.Batch:
    """A Batch message."""
    return pb.Batch(agent_id=agent_id, seq=seq, table=table, schema_version=version, arrow_ipc=payload)


def good(agent_id: str, seq: int, ticks, ts: datetime | None = None) -> pb.Batch:
    """A valid heartbeat batch."""
    return batch(agent_id, seq, encode_ipc(heartbeat_rows(agent_id, ticks, ts)))


def encode_compressed(table: pa.Table, codec: str = "zstd") -> bytes:
    """Arrow IPC stream bytes with compressed buffers (zstd or lz4)."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema, options=ipc.IpcWriteOptions(compression=codec)) as writer:
        writer.write(table)
    return sink.getvalue().to_pybytes()


def zero_heartbeats(rows: int) -> pa.Table:
    """``rows`` heartbeat rows whose every buffer is zeros (ts at the epoch, empty strings): compresses
    to almost nothing, the shape of a decompression bomb."""
    zero = {
        "ts": pa.scalar(0, pa.int64()).cast(pa.timestamp("us")),
        "node": pa.scalar(""),
        "job": pa.scalar(""),
        "agent_id": pa.scalar(""),
        "boot_ns": pa.scalar(0, pa.int64()),
        "tick": pa.scalar(0, pa.uint64()),
        "uptime_s": pa.scalar(0.0),
    }
    return pa.table({k: pa.repeat(v, rows) for k, v in zero.items()}, schema=HEARTBEAT.arrow_schema)


def bomb_payload(rows: int) -> bytes:
    """A zstd payload of ``rows`` all-zero heartbeat rows (2 M rows: 72 MB decoded, a few KB sent)."""
    return encode_compressed(zero_heartbeats(rows))


def declared_length_bomb(declared: int = 1 << 40) -> bytes:
    """A small zstd heartbeat payload whose first compressed buffer claims ``declared`` bytes uncompressed."""
    payload = bytearray(encode_compressed(heartbeat_rows("liar", range(1, 4))))
    reader = pa.BufferReader(bytes(payload))
    ipc.read_message(reader)  # schema
    start = reader.tell()
    message = ipc.read_message(reader)
    body_start = reader.tell() - message.body.size
    assert body_start > start
    # the first non-empty buffer of the body starts at offset 0 (the ts column's values) with its
    # 8-byte uncompressed-length prefix
    struct.pack_into("<q", payload, body_start, declared)
    return bytes(payload)


def invalid_utf8_heartbeat(node: str, column: str = "job") -> bytes:
    """A heartbeat payload with one row whose ``column`` holds the bytes ff fe (not UTF-8)."""
    good_rows = heartbeat_rows(node, range(1, 2))
    bad = pa.Array.from_buffers(
        pa.string(), 1, [None, pa.py_buffer(struct.pack("<ii", 0, 2)), pa.py_buffer(b"\xff\xfe")]
    )
    i = good_rows.schema.get_field_index(column)
    return encode_ipc(good_rows.set_column(i, column, bad))


def duplicate_column_heartbeat(node: str) -> bytes:
    """A heartbeat payload with every catalogue column plus a second ``node`` column."""
    return encode_ipc(heartbeat_rows(node, range(1, 2)).append_column("node", pa.array(["other"])))


def heartbeat_with_ts_us(node: str, ts_us: int) -> bytes:
    """One heartbeat row whose ts holds the raw value ``ts_us`` (microseconds since the epoch)."""
    t = heartbeat_rows(node, range(1, 2))
    raw = pa.array([ts_us], pa.int64()).cast(pa.timestamp("us"))
    return encode_ipc(t.set_column(0, "ts", raw))
