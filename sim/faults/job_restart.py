"""job_restart (negative): the job is relaunched from its checkpoint; collective sequence numbers begin again.

In a scenario with ``jobs:`` it kills the run of its job (its ``job``, else the job on its ``node``; a single
job needs neither) at ``at_s``, an operator's or C4's restart or a crash, and the job is relaunched
``restart_s`` later from its last checkpoint with new communicators (``c4.sim.job_runs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, FaultKind

if TYPE_CHECKING:
    from c4.sim.twin import ClusterTwin


class JobRestart(FaultKind):
    """A pause, then sequence numbers from 0; C4D must not read it as a hang or a fault."""

    def restarts_job(self, twin: ClusterTwin, fault: Fault) -> bool:
        """Always, at onset."""
        return True


KIND = JobRestart()
