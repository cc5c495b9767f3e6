"""ecmp_congestion: another job's ring shares the fabric; ECMP hashes some of its flows onto our switch links."""

from __future__ import annotations

from typing import TYPE_CHECKING

from c4.sim.faults.kind import Fault, FaultKind, Subflow
from c4.traffic.collectives import Job, job_flows
from c4.traffic.routing import ecmp_subflows

if TYPE_CHECKING:
    from c4.sim.twin import ClusterTwin

#: The other job's name (one other job, however many congestion faults overlap).
OTHER_JOB = "other-job"
#: Its gradients, as a multiple of our job's message: enough to fill the links it shares.
OTHER_JOB_MESSAGE_FACTOR = 4
#: Offset from the twin's seed of the other job's ring order and ECMP hash.
OTHER_JOB_SEED_OFFSET = 99


class EcmpCongestion(FaultKind):
    """While active, the other job's all-reduce runs; our connections on shared links slow down and see ECN/CNPs."""

    expected_class, component_type, expected_action = "congestion", "switch_link", "replan_traffic"

    def prepare(self, twin: ClusterTwin, fault: Fault) -> None:
        """The other job's hosts, one per leaf (at least two) so its ring crosses the spines."""
        if twin.other_job_hosts:
            return
        leaves = twin.topo.leaves
        for i in range(max(2, len(leaves))):
            twin.other_job_hosts.append(twin.add_other_job_host(f"other{i}", leaves[i % len(leaves)]))

    def other_traffic(self, twin: ClusterTwin, fault: Fault) -> dict[str, list[Subflow]]:
        """The other job's ring, hashed onto the fabric by ECMP."""
        seed = twin.seed + OTHER_JOB_SEED_OFFSET
        job = Job(
            OTHER_JOB,
            twin.other_job_hosts,
            channels=twin.nics,
            message_bytes=twin.message_bytes * OTHER_JOB_MESSAGE_FACTOR,
            shuffle_seed=seed,
            gpus_per_host=twin.gpus,
        )
        return {OTHER_JOB: ecmp_subflows(twin.topo, job_flows(job, twin.topo), seed)}


KIND = EcmpCongestion()
