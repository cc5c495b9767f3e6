"""Client side of fault administration: list current faults, acknowledge or resolve one (UpdateFault RPC),
hold or release remediation and list the holds (SetHold, ListHolds)."""

from __future__ import annotations

from datetime import UTC, datetime

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
    update = pb.FaultUpdate(fault_id=fault_id, state=state, by=by, note=note)
    reply = _call(address_or_channel, lambda stub: stub.UpdateFault(update, timeout=30))
    return reply.previous_state, reply.state


def current_faults(address_or_channel: str | grpc.Channel, include_resolved: bool = False) -> pa.Table:
    """Every fault's current row (open and acknowledged only, unless include_resolved)."""
    sql = CURRENT_FAULTS_SQL
    if not include_resolved:
        sql = f"SELECT * FROM ({sql}) WHERE state <> 'resolved'"
    table, _ = query_arrow(address_or_channel, sql)
    return table


def set_hold(
    address_or_channel: str | grpc.Channel,
    job: str | None = None,
    hold: bool = True,
    note: str = "",
    by: str = "",
) -> pb.HoldReply:
    """Hold (or release) remediation for ``job``, or cluster-wide when ``job`` is None; the collector's reply.

    An empty ``job`` is a job scope with no job (the collector refuses it), never cluster-wide: a script's
    unset ``$JOB`` must not hold every job."""
    scope = "cluster" if job is None else "job"
    request = pb.HoldRequest(scope=scope, job=job or "", hold=hold, by=by, note=note)
    return _call(address_or_channel, lambda stub: stub.SetHold(request, timeout=30))


def list_holds(address_or_channel: str | grpc.Channel) -> pb.HoldReply:
    """Every hold on remediation in force (operators' and the collector config's)."""
    return _call(address_or_channel, lambda stub: stub.ListHolds(pb.HoldsRequest(), timeout=30))


def _call(address_or_channel: str | grpc.Channel, fn):
    """``fn(stub)`` on a channel (opened and closed here for an address); QueryError when refused."""
    own = isinstance(address_or_channel, str)
    channel = open_channel(address_or_channel) if own else address_or_channel
    try:
        return fn(pb_grpc.TelemetryStub(channel))
    except grpc.RpcError as exc:
        raise query_error(exc) from None
    finally:
        if own:
            channel.close()


def hold_rows(reply: pb.HoldReply) -> list[dict]:
    """The holds of a reply as rows: scope, job, source, by, note, since (UTC ISO time, '' for config)."""
    return [
        {
            "scope": h.scope,
            "job": h.job,
            "source": h.source,
            "by": h.by,
            "note": h.note,
            "since": (
                datetime.fromtimestamp(h.since_unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                if h.since_unix_s
                else ""
            ),
        }
        for h in reply.holds
    ]
