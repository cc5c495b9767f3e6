"""Acknowledge and resolve faults through the collector's fault admin RPC, when this C4 build has it."""

from __future__ import annotations

import importlib

from c4.ui.data import channel, collector_address

#: Where the write RPC's client lives (added to the collector by the fault-admin work).
ADMIN_MODULE = "c4.analytics.fault_admin"


def _update_fault():
    try:
        module = importlib.import_module(ADMIN_MODULE)
    except ModuleNotFoundError:
        return None
    return getattr(module, "update_fault", None)


def admin_available() -> bool:
    """Whether this build can change a fault's state."""
    return _update_fault() is not None


def set_fault_state(fault_id: str, state: str, note: str = "") -> None:
    """Set a fault to 'acknowledged' or 'resolved' on the collector; raises what the RPC raises."""
    update = _update_fault()
    if update is None:
        raise RuntimeError("this collector has no fault admin RPC")
    update(channel(collector_address()), fault_id, state, note)
