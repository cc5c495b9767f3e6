"""slow_comm: the pipeline link from one rank to its peer in the next stage is slow (jobs scenarios)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, JobCauseKind
from c4.sim.pipeline import Cause

if TYPE_CHECKING:
    from c4.sim.jobs_twin import JobsTwin


class SlowComm(JobCauseKind):
    """Activations and gradients between the rank on ``node``/``gpu`` (local rank k sends on NIC k) and
    its next-stage peer take ``factor`` times as long, both ways; both ends of the pair are the cause."""

    expected_class, component_type, expected_action = "slow_comm", "nic_port", "investigate_link"

    def cause(self, twin: JobsTwin, fault: Fault) -> tuple[str, Cause]:
        """The sending rank on the fault's GPU (not in the job's last stage)."""
        job, rank = twin.rank_at(fault.node, fault.gpu)
        spec = twin.job_specs[job]
        if spec.coords(rank)[0] == spec.pp - 1:
            raise ValueError(
                f"slow_comm: {fault.node}/gpu{fault.gpu} is in the last stage of {job}: no next stage"
            )
        return job, Cause("slow_comm", [rank], fault.factor)

    def component(self, twin: JobsTwin, fault: Fault) -> str:
        """The sender's NIC, ``<host>/nic<k>`` (the bench names it as the RDMA port, like the other NIC kinds)."""
        return f"{fault.node}/nic{fault.gpu}"


KIND = SlowComm()
