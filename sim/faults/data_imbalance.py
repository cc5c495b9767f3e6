"""data_imbalance: each step one data-parallel replica of a job draws the long sequences (jobs scenarios)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, JobCauseKind
from c4.sim.pipeline import Cause

if TYPE_CHECKING:
    from c4.sim.jobs_twin import JobsTwin


class DataImbalance(JobCauseKind):
    """A replica drawn anew every step computes ``factor`` times as long: different ranks slow on different steps."""

    expected_class, component_type, expected_action = "data_imbalance", "job", "balance_data"

    def cause(self, twin: JobsTwin, fault: Fault) -> tuple[str, Cause]:
        """Any replica of the job."""
        return twin.job_of_fault(fault), Cause("data_imbalance", [], fault.factor)

    def component(self, twin: JobsTwin, fault: Fault) -> str:
        """The job."""
        return twin.job_of_fault(fault)


KIND = DataImbalance()
