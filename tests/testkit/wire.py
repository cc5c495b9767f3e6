"""Hand-made wire messages and token plumbing for tests that talk to a collector as a client would."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc

from c4.agent.batcher import rows_to_table
from c4.arrow_ipc import encode_ipc
from c4.catalogue import load
from c4.security import ClientSecurity
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc


def hello(agent_id: str, node: str | None = None) -> pb.HelloRequest:
    """A Hello registering ``node`` (default: the agent id)."""
    return pb.HelloRequest(agent_id=agent_id, hostname=node if node is not None else agent_id)


def batch(agent_id: str, seq: int, table: str, rows: list[dict]) -> pb.Batch:
    """Rows of one catalogue table as a wire batch (ts/node/job default to now/agent id/'')."""
    catalogue = load()
    defaults = {"ts": datetime.now(UTC).replace(tzinfo=None), "node": agent_id, "job": ""}
    data = rows_to_table(catalogue, table, rows, defaults)
    spec = catalogue[table]
    return pb.Batch(
        agent_id=agent_id, seq=seq, table=table, schema_version=spec.version, arrow_ipc=encode_ipc(data)
    )


def heartbeat(agent_id: str, seq: int, node: str | None = None) -> pb.Batch:
    """One agent_heartbeat row (tick = seq) for ``node`` (default: the agent id)."""
    row = {"agent_id": agent_id, "boot_ns": 1, "tick": seq, "uptime_s": 1.0}
    if node is not None:
        row["node"] = node
    return batch(agent_id, seq, "agent_heartbeat", [row])


def token_security(tmp: Path, token: str | None, **tls: str) -> ClientSecurity:
    """Client security presenting ``token`` (None: no token), written to a file under ``tmp``."""
    if token is None:
        return ClientSecurity(**tls)
    path = tmp / f"token-{abs(hash(token)):x}"
    path.write_text(token + "\n")
    return ClientSecurity(token_file=str(path), **tls)


def stub(address: str, security: ClientSecurity) -> pb_grpc.TelemetryStub:
    """A Telemetry stub on a fresh channel."""
    return pb_grpc.TelemetryStub(security.channel(address))


def code_of(fn: Callable[[], object]) -> grpc.StatusCode:
    """The status code ``fn`` ends with (OK when it returns)."""
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK
