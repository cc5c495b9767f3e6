"""One-shot push of a finished table (a traffic plan, a diagnosis) to a collector, exactly once."""

from __future__ import annotations

import time

import grpc
import pyarrow as pa

from c4.arrow_ipc import split_ipc
from c4.catalogue import load
from c4.security import ClientSecurity, channel_options
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc


class PushError(RuntimeError):
    """The collector refused the rows or could not be reached."""


def push_table(
    address: str,
    table: str,
    table_data: pa.Table,
    agent_id: str = "c4-push",
    max_batch_bytes: int = 4 << 20,
    security: ClientSecurity | None = None,
) -> int:
    """Send ``table_data`` to ``table`` on the collector; returns rows committed.

    Sequence numbers are microseconds since the epoch, so repeated one-shot pushes
    from the same id keep increasing without a local state file. Columns the catalogue gained
    after ``table_data`` was shaped are sent as NULL; a key column must be there.
    """
    spec = load()[table]
    missing = [c for c in spec.column_names if c not in table_data.column_names]
    lacking_keys = [c for c in missing if c in spec.keys or c in ("ts", "node")]
    if lacking_keys:
        raise PushError(f"{table}: rows lack key column(s) {', '.join(lacking_keys)}")
    for c in missing:
        table_data = table_data.append_column(c, pa.nulls(table_data.num_rows))
    data = table_data.select(spec.column_names).cast(spec.arrow_schema)
    base_seq = time.time_ns() // 1000
    batches = [
        pb.Batch(agent_id=agent_id, seq=base_seq + i, table=table, schema_version=spec.version, arrow_ipc=p)
        for i, p in enumerate(split_ipc(data, max_batch_bytes))
    ]
    security = security or ClientSecurity.from_env("agent")
    with security.channel(address, channel_options(max_batch_bytes + (1 << 20))) as channel:
        stub = pb_grpc.TelemetryStub(channel)
        committed = 0
        try:
            for ack in stub.Push(iter(batches), timeout=60):
                if ack.code != 0:
                    raise PushError(f"collector refused {table} batch seq={ack.seq}: {ack.message}")
                committed += ack.rows
        except grpc.RpcError as exc:
            raise PushError(f"cannot push to {address}: {exc.details() or exc.code().name}") from None
    return committed
