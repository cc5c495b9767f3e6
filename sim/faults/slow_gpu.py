"""slow_gpu: one rank's GPU computes slower from a given second on, and nothing on the node says why."""

from __future__ import annotations

from c4.sim.faults.kind import Fault, FaultKind


class SlowGpu(FaultKind):
    """The GPU's compute takes ``1 + factor`` times as long; NVML shows nothing (unlike thermal_throttle).

    Only the collectives tell: the rank arrives last and so waits least (a straggler).
    """

    expected_class, component_type, expected_action = "non_comm_slow", "gpu", "drain_node"

    def compute_factor(self, fault: Fault, node: str, gpu: int) -> float:
        """Slower on the fault's GPU only."""
        return 1 + fault.factor if (node, gpu) == (fault.node, fault.gpu) else 1.0


KIND = SlowGpu()
