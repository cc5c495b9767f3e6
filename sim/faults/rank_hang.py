"""rank_hang: one rank is stuck on its host (a dead data loader, a deadlock) and never issues the collective."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, FaultKind
from c4.sim.pipeline import Cause

if TYPE_CHECKING:
    from c4.sim.jobs_twin import JobsTwin
    from c4.sim.node_files import NodeWriter
    from c4.sim.twin import ClusterTwin, StepOutput


class RankHang(FaultKind):
    """Every other rank waits in the collective (their GPUs spin); the hung rank's GPU idles."""

    expected_class, component_type, expected_action = "non_comm_hang", "gpu", "restart_job"

    def stuck_ranks(self, twin: ClusterTwin, fault: Fault, t: float) -> set[tuple[str, int]]:
        """The hung rank, while the fault lasts."""
        return {(fault.node, fault.gpu)} if fault.active(t) else set()

    def cause(self, twin: JobsTwin, fault: Fault) -> tuple[str, Cause]:
        """In a jobs scenario: the rank issues nothing from the fault's step on; its job stops, others run on."""
        job, rank = twin.rank_at(fault.node, fault.gpu)
        return job, Cause("hang", [rank])

    def expose(self, writer: NodeWriter, fault: Fault, out: StepOutput) -> None:
        """The hung rank's GPU idles while the job is blocked."""
        if fault.active(out.t) and out.blocked:
            writer.gpu_gauges(fault.gpu)["util_gpu_pct"] = 0.0


KIND = RankHang()
