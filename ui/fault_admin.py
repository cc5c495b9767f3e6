"""Acknowledge and resolve faults through the collector's UpdateFault RPC; hold and release remediation
through SetHold, list the holds through ListHolds."""

from __future__ import annotations

import grpc

from c4.faults import hold_rows, list_holds, set_hold, update_fault
from c4.query import QueryError
from c4.ui.data import DOWN_CODES, CollectorDown, channel, collector_address


class AdminUnavailable(RuntimeError):
    """The collector predates the RPC (UpdateFault, SetHold or ListHolds)."""


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


def current_holds() -> list[dict]:
    """The holds on remediation in force (operators' and the config's), as rows.

    Raises AdminUnavailable for a collector without ListHolds, CollectorDown when it is unreachable.
    """
    try:
        return hold_rows(list_holds(channel(collector_address())))
    except QueryError as exc:
        if exc.code == grpc.StatusCode.UNIMPLEMENTED:
            raise AdminUnavailable("this collector has no ListHolds RPC (upgrade it to see holds)") from None
        if exc.code in DOWN_CODES:
            raise CollectorDown(str(exc)) from None
        raise


def change_hold(job: str, hold: bool, note: str = "") -> str:
    """Hold or release remediation for ``job`` ('' for cluster-wide, as the page's field says); returns the
    collector's message.

    Raises AdminUnavailable for a collector without SetHold, QueryError for a refusal.
    """
    try:
        return set_hold(channel(collector_address()), job or None, hold, note, by="c4 ui").message
    except QueryError as exc:
        if exc.code == grpc.StatusCode.UNIMPLEMENTED:
            raise AdminUnavailable(
                "this collector has no SetHold RPC (upgrade it to hold remediation)"
            ) from None
        raise
