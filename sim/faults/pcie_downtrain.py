"""pcie_downtrain: one GPU's PCIe link trained at a lower generation than it supports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, FaultKind

if TYPE_CHECKING:
    from c4.sim.node_files import NodeWriter
    from c4.sim.twin import StepOutput


class PcieDowntrain(FaultKind):
    """NVML shows PCIe Gen 3 on a Gen 5 GPU; the job itself runs on."""

    expected_class, component_type, expected_action = "hardware", "gpu", "reset_gpu"

    def expose(self, writer: NodeWriter, fault: Fault, out: StepOutput) -> None:
        """The current PCIe generation drops to 3 while the fault lasts."""
        if fault.active(out.t):
            writer.gpu_gauges(fault.gpu)["pcie_gen_cur"] = 3


KIND = PcieDowntrain()
