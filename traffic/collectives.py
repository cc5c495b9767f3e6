"""Collectives to flows: job placement, NCCL-like rail-aligned rings, trees, halving-doubling, all-to-all, pipeline p2p."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from c4.traffic.topology import Topology, TopologyError


@dataclass(frozen=True)
class Flow:
    """One connection between two host NICs carrying ``bytes`` for one collective."""

    job: str
    src: str  # host
    dst: str
    src_nic: int
    dst_nic: int
    channel: int
    bytes: float
    qps: int = 1


@dataclass
class Job:
    """A training job: ranks placed on hosts, and the collective it runs."""

    name: str
    hosts: list[str]
    collective: str = (
        "allreduce_ring"  # allreduce_ring | allreduce_tree | halving_doubling | alltoall | pipeline
    )
    message_bytes: float = 1 << 30
    channels: int = 8
    qps: int = 1
    shuffle_seed: int | None = None  # shuffle the ring order (placement that ignores topology)
    gpus_per_host: int = 8
    extra: dict = field(default_factory=dict)


def ordered_hosts(job: Job) -> list[str]:
    """The ring order of the job's hosts."""
    hosts = list(job.hosts)
    if job.shuffle_seed is not None:
        random.Random(job.shuffle_seed).shuffle(hosts)
    return hosts


def job_flows(job: Job, topo: Topology) -> list[Flow]:
    """Inter-host connections of one collective (intra-host traffic rides NVLink and is left out)."""
    for h in job.hosts:
        if h not in topo.hosts:
            raise TopologyError(f"job {job.name!r}: host {h!r} is not in the topology")
    hosts = ordered_hosts(job)
    n = len(hosts)
    if n < 2:
        return []
    nics = len(topo.hosts[hosts[0]].nics)
    flows: list[Flow] = []
    s = float(job.message_bytes)
    if job.collective == "allreduce_ring":
        # NCCL ring all-reduce: every channel is a ring over all hosts; each connection carries
        # 2 (N-1)/N of the channel's share of the message, N = GPUs in the ring.
        ranks = n * job.gpus_per_host
        per_conn = 2 * (ranks - 1) / ranks * s / job.channels
        for c in range(job.channels):
            nic = c % nics  # rail-aligned: channel c leaves and enters through the same rail
            for i in range(n):
                flows.append(Flow(job.name, hosts[i], hosts[(i + 1) % n], nic, nic, c, per_conn, job.qps))
    elif job.collective == "allreduce_tree":
        # double binary tree: each channel's tree moves the data up (reduce) and down (broadcast)
        per_conn = s / job.channels
        for c in range(job.channels):
            nic = c % nics
            order = hosts if c % 2 == 0 else hosts[::-1]
            for i in range(1, n):
                parent = (i - 1) // 2
                flows.append(Flow(job.name, order[i], order[parent], nic, nic, c, per_conn, job.qps))
                flows.append(Flow(job.name, order[parent], order[i], nic, nic, c, per_conn, job.qps))
    elif job.collective == "halving_doubling":
        if n & (n - 1):
            raise TopologyError(
                f"job {job.name!r}: halving-doubling needs a power-of-two host count, got {n}"
            )
        steps = int(math.log2(n))
        for c in range(job.channels):
            nic = c % nics
            for k in range(steps):
                size = s / job.channels / (2 ** (k + 1)) * 2  # reduce-scatter + all-gather steps
                for i in range(n):
                    flows.append(Flow(job.name, hosts[i], hosts[i ^ (1 << k)], nic, nic, c, size, job.qps))
    elif job.collective == "alltoall":
        # PXN-style: GPU g of a host sends to GPU g of every other host through NIC g (rail-aligned)
        per_pair = s / (n * job.gpus_per_host)
        for g in range(min(job.gpus_per_host, nics)):
            for i in range(n):
                for j in range(n):
                    if i != j:
                        flows.append(
                            Flow(
                                job.name,
                                hosts[i],
                                hosts[j],
                                g,
                                g,
                                g,
                                per_pair * job.gpus_per_host / nics,
                                job.qps,
                            )
                        )
    elif job.collective == "pipeline":
        stages = int(job.extra.get("stages", n))
        per = max(1, n // stages)
        for st in range(stages - 1):
            for k in range(per):
                a, b = hosts[st * per + k], hosts[(st + 1) * per + k]
                for nic in range(nics):
                    flows.append(Flow(job.name, a, b, nic, nic, nic, s / nics, job.qps))
    else:
        raise TopologyError(f"job {job.name!r}: unknown collective {job.collective!r}")
    return flows


def load_job_yaml(path) -> list[Job]:
    """Jobs from a YAML file: a mapping with `jobs:` (or one job)."""

    try:
        spec = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(f"{path}: {exc}") from None
    items = spec.get("jobs", [spec]) if isinstance(spec, dict) else None
    if not items:
        raise TopologyError(f"{path}: expected `jobs:` with at least one job")
    jobs = []
    for i, j in enumerate(items):
        if not isinstance(j, dict) or "hosts" not in j:
            raise TopologyError(f"{path}: job #{i} needs `hosts` (a list, or `first..last` host indices)")
        hosts = j["hosts"]
        if isinstance(hosts, str) and ".." in hosts:
            a, b = (int(x) for x in hosts.split(".."))
            hosts = [f"host{k}" for k in range(a, b + 1)]
        known = {
            "name",
            "hosts",
            "collective",
            "message_bytes",
            "channels",
            "qps",
            "shuffle_seed",
            "gpus_per_host",
        }
        jobs.append(
            Job(
                name=str(j.get("name", f"job{i}")),
                hosts=list(hosts),
                collective=j.get("collective", "allreduce_ring"),
                message_bytes=float(j.get("message_bytes", 1 << 30)),
                channels=int(j.get("channels", 8)),
                qps=int(j.get("qps", 1)),
                shuffle_seed=j.get("shuffle_seed"),
                gpus_per_host=int(j.get("gpus_per_host", 8)),
                extra={k: v for k, v in j.items() if k not in known},
            )
        )
    return jobs
