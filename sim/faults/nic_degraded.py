"""nic_degraded: a host NIC port's link runs at a fraction of its rate and retransmits (a bad cable or optic)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, FaultKind, degraded_rate, host_port_link

if TYPE_CHECKING:
    from c4.sim.node_files import NodeWriter
    from c4.sim.twin import ClusterTwin, StepOutput

#: RoCE adaptive retransmissions the degraded port adds per iteration.
RETRANSMITS_PER_STEP = 40


class NicDegraded(FaultKind):
    """The port's cable carries ``factor`` of its rate; its RDMA counters show retransmissions."""

    expected_class, component_type, expected_action = "hardware", "nic_port", "replace_cable"

    def link_ends(self, twin: ClusterTwin, fault: Fault) -> tuple[str, str]:
        """The port's cable to its leaf."""
        return host_port_link(twin, fault)

    def link_state(self, twin: ClusterTwin, fault: Fault, t: float) -> tuple[str, float]:
        """Degraded to ``factor`` of the nominal rate."""
        return degraded_rate(twin, self.link_ends(twin, fault), fault)

    def expose(self, writer: NodeWriter, fault: Fault, out: StepOutput) -> None:
        """Retransmissions on the port while the fault lasts."""
        if fault.active(out.t):
            writer.roce_retransmits[fault.nic] += RETRANSMITS_PER_STEP


KIND = NicDegraded()
