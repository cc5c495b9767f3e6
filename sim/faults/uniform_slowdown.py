"""uniform_slowdown (negative): every GPU computes slower alike (a bigger batch, a slower kernel); nothing is faulty."""

from __future__ import annotations

from c4.sim.faults.kind import Fault, FaultKind


class UniformSlowdown(FaultKind):
    """Every compute phase takes ``1 + factor`` times as long; C4D must raise nothing."""

    def compute_factor(self, fault: Fault, node: str, gpu: int) -> float:
        """Slower everywhere."""
        return 1 + fault.factor


KIND = UniformSlowdown()
