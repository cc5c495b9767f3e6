"""slow_worker: one rank of a job computes ``factor`` times slower from a given second on (jobs scenarios)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, JobCauseKind
from c4.sim.pipeline import Cause

if TYPE_CHECKING:
    from c4.sim.jobs_twin import JobsTwin


class SlowWorker(JobCauseKind):
    """The rank on ``node``/``gpu``: forward, backward and optimizer take ``factor`` times as long.

    Every rank downstream in the pipeline and every data-parallel peer waits on it: they are victims.
    Nothing in NVML says why, so the action is to look (C/D join the GPU's counters to decide).
    """

    expected_class, component_type, expected_action = "slow_worker", "gpu", "investigate"

    def cause(self, twin: JobsTwin, fault: Fault) -> tuple[str, Cause]:
        """The rank on the fault's GPU."""
        job, rank = twin.rank_at(fault.node, fault.gpu)
        return job, Cause("slow_worker", [rank], fault.factor)


KIND = SlowWorker()
