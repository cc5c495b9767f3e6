"""row_remap_failure: a GPU ran out of spare memory rows (NVML's remap failure flag, with an Xid 64)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, FaultKind

if TYPE_CHECKING:
    from c4.sim.node_files import NodeWriter
    from c4.sim.twin import StepOutput

#: The Xid the driver logs when a row remapping fails (unless the scenario names another).
XID_ROW_REMAP_FAILURE = 64


class RowRemapFailure(FaultKind):
    """NVML's remapped_rows_failure is set while the fault lasts; the driver logs an Xid at onset."""

    expected_class, component_type, expected_action = "hardware", "gpu", "replace_gpu"

    def expose(self, writer: NodeWriter, fault: Fault, out: StepOutput) -> None:
        """The failure flag, and the Xid in the iteration of onset."""
        if fault.active(out.t):
            writer.gpu_gauges(fault.gpu)["remapped_rows_failure"] = 1
        if fault.begins_within(out.t, out.duration_s):
            writer.raise_xid(fault.gpu, fault.xid or XID_ROW_REMAP_FAILURE, fault.at_s)


KIND = RowRemapFailure()
