"""Job placement: which host, GPU and NIC every rank of a job runs on (rail-aligned GPU -> NIC)."""

from __future__ import annotations

from dataclasses import dataclass

from c4.traffic.collectives import Job, ordered_hosts
from c4.traffic.topology import Topology, TopologyError


@dataclass(frozen=True)
class Rank:
    """One rank of a job: its host, local GPU and the NIC (rail) its inter-host traffic uses."""

    rank: int
    host: str
    gpu: int
    nic: int


def nic_of_gpu(gpu: int, gpus: int, nics: int) -> int:
    """The rail-aligned NIC of a local GPU: GPUs split evenly over NICs (8 GPUs / 4 NICs -> 2 per NIC)."""
    return gpu * nics // gpus


def place(job: Job, topo: Topology) -> list[Rank]:
    """Ranks in ring order: host by host (ordered_hosts), local GPU 0..gpus_per_host-1 on each."""
    ranks = []
    for h in ordered_hosts(job):
        host = topo.hosts.get(h)
        if host is None:
            raise TopologyError(f"job {job.name!r}: host {h!r} is not in the topology")
        if job.gpus_per_host > host.gpus:
            raise TopologyError(
                f"job {job.name!r}: host {h} has {host.gpus} GPUs, job wants {job.gpus_per_host}"
            )
        for g in range(job.gpus_per_host):
            ranks.append(Rank(len(ranks), h, g, nic_of_gpu(g, job.gpus_per_host, len(host.nics))))
    return ranks
