"""cpu_stall: one rank's host side starves its GPU: a slow data loader and pauses (GC) before a forward."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, JobCauseKind
from c4.sim.pipeline import Cause

if TYPE_CHECKING:
    from c4.sim.jobs_twin import JobsTwin


class CpuStall(JobCauseKind):
    """The rank on ``node``/``gpu``: data_load takes ``factor`` times as long, and each step one forward
    starts ``stall_s`` late although its input is there (the GPU idles while the host is busy)."""

    expected_class, component_type, expected_action = "cpu_stall", "cpu", "investigate_host"

    def cause(self, twin: JobsTwin, fault: Fault) -> tuple[str, Cause]:
        """The rank on the fault's GPU."""
        job, rank = twin.rank_at(fault.node, fault.gpu)
        return job, Cause("cpu_stall", [rank], fault.factor, stall_s=fault.stall_s)

    def component(self, twin: JobsTwin, fault: Fault) -> str:
        """``<host>/cpu``."""
        return f"{fault.node}/cpu"


KIND = CpuStall()
