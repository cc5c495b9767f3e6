"""thermal_throttle: one GPU runs hot and clocks down; its rank computes slower and the others wait for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, FaultKind

if TYPE_CHECKING:
    from c4.sim.node_files import NodeWriter
    from c4.sim.twin import StepOutput

#: NVML clocks event reason: software thermal slowdown.
CLOCKS_EVENT_SW_THERMAL = 0x40


class ThermalThrottle(FaultKind):
    """The GPU's compute takes ``1 + factor`` times as long; NVML shows the heat and the throttle reason."""

    expected_class, component_type, expected_action = "non_comm_slow", "gpu", "drain_node"

    def compute_factor(self, fault: Fault, node: str, gpu: int) -> float:
        """Slower on the throttled GPU only."""
        return 1 + fault.factor if (node, gpu) == (fault.node, fault.gpu) else 1.0

    def expose(self, writer: NodeWriter, fault: Fault, out: StepOutput) -> None:
        """Hot, throttled, at a lower SM clock while the fault lasts."""
        if fault.active(out.t):
            writer.gpu_gauges(fault.gpu).update(
                temp_gpu_c=89.0, clocks_event_reasons=CLOCKS_EVENT_SW_THERMAL, clock_sm_mhz=1200
            )


KIND = ThermalThrottle()
