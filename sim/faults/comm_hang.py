"""comm_hang: every rank issued the collective, but one NIC's connections make no progress (a stuck QP)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, FaultKind

if TYPE_CHECKING:
    from c4.sim.twin import ClusterTwin


class CommHang(FaultKind):
    """The collective never completes; the profiler shows the stalled connection with no bytes moving."""

    expected_class, component_type, expected_action = "comm_hang", "nic_port", "restart_job"

    def stalled_connections(self, twin: ClusterTwin, fault: Fault) -> set[tuple[str, int]]:
        """The sends of the fault's NIC."""
        return {(fault.node, fault.nic)}


KIND = CommHang()
