"""transient_slowdown (negative): one node computes slower for a moment shorter than C4D's suppression window."""

from __future__ import annotations

from c4.sim.faults.kind import Fault, FaultKind


class TransientSlowdown(FaultKind):
    """The node's GPUs take ``1 + factor`` times as long while the (short) fault lasts; C4D must raise nothing."""

    def compute_factor(self, fault: Fault, node: str, gpu: int) -> float:
        """Slower on the fault's node."""
        return 1 + fault.factor if node == fault.node else 1.0


KIND = TransientSlowdown()
