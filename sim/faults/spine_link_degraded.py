"""spine_link_degraded: the cable between the first leaf and the first spine runs at a fraction of its rate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, FaultKind, degraded_rate

if TYPE_CHECKING:
    from c4.sim.twin import ClusterTwin


def switch_link_name(a: str, b: str) -> str:
    """A cable between two switches, named the same whichever way it is walked."""
    return "<->".join(sorted((a, b)))


class SpineLinkDegraded(FaultKind):
    """Connections whose routes cross leaf0-spine0 slow down; no host port shows anything."""

    expected_class, component_type, expected_action = "hardware", "switch_link", "replace_cable"

    def link_ends(self, twin: ClusterTwin, fault: Fault) -> tuple[str, str]:
        """leaf0 - spine0."""
        return twin.topo.leaves[0], twin.topo.spines[0]

    def link_state(self, twin: ClusterTwin, fault: Fault, t: float) -> tuple[str, float]:
        """Degraded to ``factor`` of the nominal rate."""
        return degraded_rate(twin, self.link_ends(twin, fault), fault)

    def component(self, twin: ClusterTwin, fault: Fault) -> str:
        """The cable, as C4D's fabric model names it."""
        return switch_link_name(*self.link_ends(twin, fault))


KIND = SpineLinkDegraded()
