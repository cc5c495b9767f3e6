"""spine_link_down: the cable between the first leaf and the first spine goes down and stays down."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, FaultKind
from c4.sim.faults.spine_link_degraded import switch_link_name

if TYPE_CHECKING:
    from c4.sim.twin import ClusterTwin


class SpineLinkDown(FaultKind):
    """leaf0-spine0 carries nothing: ECMP hashes around it; a pinned plan's pieces on it are re-hashed
    (resilient ECMP) onto the other spines, where they collide; no host port shows anything."""

    expected_class, component_type, expected_action = "hardware", "switch_link", "replace_cable"

    def link_ends(self, twin: ClusterTwin, fault: Fault) -> tuple[str, str]:
        """leaf0 - spine0."""
        return twin.topo.leaves[0], twin.topo.spines[0]

    def link_state(self, twin: ClusterTwin, fault: Fault, t: float) -> tuple[str, None]:
        """Down."""
        return "down", None

    def component(self, twin: ClusterTwin, fault: Fault) -> str:
        """The cable, as C4D's fabric model names it."""
        return switch_link_name(*self.link_ends(twin, fault))


KIND = SpineLinkDown()
