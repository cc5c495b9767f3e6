"""Client side of fault administration: list current faults, acknowledge or resolve one (UpdateFault RPC)."""

from __future__ import annotations

import grpc
import pyarrow as pa

from c4.query import open_channel, query_arrow, query_error
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

#: The current state of every fault (the catalogue's ``faults_current`` view: the newest row per fault_id).
CURRENT_FAULTS_SQL = (
    "SELECT fault_id, state, fault_class, component_type, component, node, confidence, action, "
    "first_seen, last_seen, summary FROM faults_current ORDER BY last_seen DESC"
)


def update_fault(
    address_or_channel: str | grpc.Channel, fault_id: str, state: str, note: str = "", by: str = ""
) -> tuple[str, str]:
    """Acknowledge or resolve a fault on a collector; returns (previous state, new state)."""
    own = isinstance(address_or_channel, str)
    channel = open_channel(address_or_channel) if own else address_or_channel
    try:
        reply = pb_grpc.TelemetryStub(channel).UpdateFault(
            pb.FaultUpdate(fault_id=fault_id, state=state, by=by, note=note), timeout=30
        )
        return reply.previous_state, reply.state
    except grpc.RpcError as exc:
        raise query_error(exc) from None
    finally:
        if own:
            channel.close()


def current_faults(address_or_channel: str | grpc.Channel, include_resolved: bool = False) -> pa.Table:
    """Every fault's current row (open and acknowledged only, unless include_resolved)."""
    sql = CURRENT_FAULTS_SQL
    if not include_resolved:
        sql = f"SELECT * FROM ({sql}) WHERE state <> 'resolved'"
    table, _ = query_arrow(address_or_channel, sql)
    return table
