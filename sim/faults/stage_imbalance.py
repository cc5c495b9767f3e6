"""stage_imbalance: one pipeline stage of a job carries more work than the others (jobs scenarios)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, JobCauseKind
from c4.sim.pipeline import Cause

if TYPE_CHECKING:
    from c4.sim.jobs_twin import JobsTwin


class StageImbalance(JobCauseKind):
    """Every rank of ``stage`` of ``job`` computes ``factor`` times as long (e.g. the loss and embedding).

    Not a fault of any hardware: the layers should be rebalanced.
    """

    expected_class, component_type, expected_action = "stage_imbalance", "job_stage", "rebalance_stages"

    def cause(self, twin: JobsTwin, fault: Fault) -> tuple[str, Cause]:
        """Every rank of the stage."""
        job = twin.job_of_fault(fault)
        spec = twin.job_specs[job]
        if not 0 <= fault.stage < spec.pp:
            raise ValueError(f"stage_imbalance: job {job} has no stage {fault.stage} (pp={spec.pp})")
        return job, Cause("stage_imbalance", spec.stage_ranks(fault.stage), fault.factor)

    def component(self, twin: JobsTwin, fault: Fault) -> str:
        """``<job>/stage<s>``."""
        return f"{twin.job_of_fault(fault)}/stage{fault.stage}"


KIND = StageImbalance()
