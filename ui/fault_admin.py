"""Acknowledge and resolve faults through the collector's UpdateFault RPC."""

from __future__ import annotations

import grpc

from c4.faults import update_fault
from c4.query import QueryError
from c4.ui.data import channel, collector_address


class AdminUnavailable(RuntimeError):
    """The collector predates the UpdateFault RPC."""


def set_fault_state(fault_id: str, state: str, note: str = "") -> tuple[str, str]:
    """Set a fault to 'acknowledged' or 'resolved'; returns (previous, new) state.

    Raises AdminUnavailable for a collector without the RPC, QueryError for a refusal.
    """
    try:
        return update_fault(channel(collector_address()), fault_id, state, note, by="c4 ui")
    except QueryError as exc:
        if exc.code == grpc.StatusCode.UNIMPLEMENTED:
            raise AdminUnavailable(
                "this collector has no UpdateFault RPC (upgrade it to change fault states)"
            ) from None
        raise
