"""xid: a GPU raises an Xid (``fault.xid``); 79 (fallen off the bus) also stops its rank for good."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.agent.xid import describe
from c4.sim.faults.kind import Fault, FaultKind

if TYPE_CHECKING:
    from c4.sim.node_files import NodeWriter
    from c4.sim.twin import ClusterTwin, StepOutput

#: The Xid of a fault that names none.
DEFAULT_XID = 64
#: The GPU has fallen off the bus: its rank never issues another collective.
XID_GPU_LOST = 79
#: An NVLink error: the GPU's links count CRC and replay errors.
XID_NVLINK = 74
#: CRC data errors an Xid 74 adds on each of the GPU's links.
NVLINK_ERRORS_PER_XID = 25


class Xid(FaultKind):
    """At onset the Xid reaches the kernel log and NVML; 74 comes with NVLink errors, 79 loses the GPU."""

    expected_class, component_type, expected_action = "hardware", "gpu", "by_xid"

    def stuck_ranks(self, twin: ClusterTwin, fault: Fault, t: float) -> set[tuple[str, int]]:
        """A lost GPU's rank, from onset on (whatever the duration)."""
        return {(fault.node, fault.gpu)} if fault.xid == XID_GPU_LOST and fault.at_s <= t else set()

    def expose(self, writer: NodeWriter, fault: Fault, out: StepOutput) -> None:
        """The Xid in the iteration of onset."""
        if not fault.begins_within(out.t, out.duration_s):
            return
        xid = fault.xid or DEFAULT_XID
        writer.raise_xid(fault.gpu, xid, fault.at_s)
        if xid == XID_NVLINK:
            writer.nvlink_errors[fault.gpu] += NVLINK_ERRORS_PER_XID

    def action(self, fault: Fault) -> str:
        """What the Xid catalogue advises for this Xid."""
        return describe(fault.xid).action


KIND = Xid()
