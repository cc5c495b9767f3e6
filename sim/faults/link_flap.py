"""link_flap: a host NIC port's link goes down and up again and again (2 s down, 2 s up)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, FaultKind, host_port_link

if TYPE_CHECKING:
    from c4.sim.node_files import NodeWriter
    from c4.sim.twin import ClusterTwin, StepOutput

#: Seconds the link stays in each state while flapping.
FLAP_HALF_PERIOD_S = 2


class LinkFlap(FaultKind):
    """The port's cable alternates down and up; every transition is a carrier change on the netdev."""

    expected_class, component_type, expected_action = "hardware", "nic_port", "replace_cable"

    def link_ends(self, twin: ClusterTwin, fault: Fault) -> tuple[str, str]:
        """The port's cable to its leaf."""
        return host_port_link(twin, fault)

    def link_state(self, twin: ClusterTwin, fault: Fault, t: float) -> tuple[str, None]:
        """Down in the first half of each period since onset, up in the second."""
        return ("down" if int((t - fault.at_s) / FLAP_HALF_PERIOD_S) % 2 == 0 else "up"), None

    def expose(self, writer: NodeWriter, fault: Fault, out: StepOutput) -> None:
        """Coming back up counts a carrier change too (going down is counted for every kind)."""
        for change in out.link_changes:
            if change.fault is fault and change.state == "up":
                writer.carrier_changes[fault.nic] += 1


KIND = LinkFlap()
