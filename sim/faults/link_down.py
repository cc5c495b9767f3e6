"""link_down: a host NIC port's link goes down and stays down (the collective waits for it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, FaultKind, host_port_link

if TYPE_CHECKING:
    from c4.sim.twin import ClusterTwin


class LinkDown(FaultKind):
    """The port's cable is down while the fault lasts; connections crossing it never finish."""

    expected_class, component_type, expected_action = "hardware", "nic_port", "replace_cable"

    def link_ends(self, twin: ClusterTwin, fault: Fault) -> tuple[str, str]:
        """The port's cable to its leaf."""
        return host_port_link(twin, fault)

    def link_state(self, twin: ClusterTwin, fault: Fault, t: float) -> tuple[str, None]:
        """Down."""
        return "down", None


KIND = LinkDown()
