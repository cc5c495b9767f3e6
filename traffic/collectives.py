"""Collectives to flows: job placement, NCCL-like rail-aligned rings, trees, halving-doubling, all-to-all, pipeline p2p."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

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
    gpus_from_topology: bool = False  # gpus_per_host unset in the YAML: fit_jobs takes it from the hosts


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


_JOB_KEYS = (
    "name",
    "hosts",
    "collective",
    "message_bytes",
    "channels",
    "qps",
    "shuffle_seed",
    "gpus_per_host",
    "stages",
)
COLLECTIVES = ("allreduce_ring", "allreduce_tree", "halving_doubling", "alltoall", "pipeline")
#: NCCL_IB_QPS_PER_CONNECTION's range
MAX_QPS = 128


def _int_field(j: dict, key: str, default: int, where: str, lo: int, hi: int | None = None) -> int:
    """An integer job field in [lo, hi], or TopologyError naming where and the field."""
    v = j.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise TopologyError(f"{where}: `{key}` must be an integer {rng}, got {v!r}")
    return v


def _message_bytes(j: dict, where: str) -> float:
    """message_bytes: a finite positive number."""
    v = j.get("message_bytes", 1 << 30)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
        raise TopologyError(f"{where}: `message_bytes` must be a finite positive number, got {v!r}")
    return float(v)


def _job_hosts(raw: object, where: str) -> list[str]:
    """The job's hosts: a list of at least two distinct host names, or `first..last` host indices."""
    from c4.traffic.names import check_host  # lazy: names imports topology, like this module

    if isinstance(raw, str) and ".." in raw:
        a, _, b = raw.partition("..")
        if not (a.strip().isdigit() and b.strip().isdigit()) or int(a) > int(b):
            raise TopologyError(f"{where}: `hosts` {raw!r} must be `first..last` with integers first <= last")
        raw = [f"host{k}" for k in range(int(a), int(b) + 1)]
    if not isinstance(raw, list):
        raise TopologyError(f"{where}: `hosts` must be a list of host names or `first..last`, got {raw!r}")
    hosts = [check_host(h, where) for h in raw]
    seen: set[str] = set()
    for h in hosts:
        if h in seen:
            raise TopologyError(f"{where}: host {h!r} is listed twice")
        seen.add(h)
    if len(hosts) < 2:
        raise TopologyError(f"{where}: `hosts` needs at least two hosts (one host has no inter-host traffic)")
    return hosts


def _load_job(j: object, i: int, path: object) -> Job:
    """One validated job entry; errors name the file, the job and the field."""
    from c4.traffic.names import is_job_name  # lazy: names imports topology, like this module

    if not isinstance(j, dict) or "hosts" not in j:
        raise TopologyError(f"{path}: job #{i} needs `hosts` (a list, or `first..last` host indices)")
    name = j.get("name", f"job{i}")
    if not is_job_name(name):
        raise TopologyError(
            f"{path}: job #{i}: name {name!r} must be 1-128 printable characters (no control characters)"
        )
    where = f"{path}: job {name!r}"
    unknown = sorted(set(j) - set(_JOB_KEYS))
    if unknown:
        raise TopologyError(f"{where}: unknown keys {unknown}; allowed: {', '.join(_JOB_KEYS)}")
    collective = j.get("collective", "allreduce_ring")
    if collective not in COLLECTIVES:
        raise TopologyError(
            f"{where}: unknown collective {collective!r}; choose from {', '.join(COLLECTIVES)}"
        )
    seed = j.get("shuffle_seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TopologyError(f"{where}: `shuffle_seed` must be an integer, got {seed!r}")
    hosts = _job_hosts(j["hosts"], where)
    extra = {"stages": _int_field(j, "stages", len(hosts), where, 2, len(hosts))} if "stages" in j else {}
    return Job(
        name=name,
        hosts=hosts,
        collective=collective,
        message_bytes=_message_bytes(j, where),
        channels=_int_field(j, "channels", 8, where, 1, 1024),
        qps=_int_field(j, "qps", 1, where, 1, MAX_QPS),
        shuffle_seed=seed,
        gpus_per_host=_int_field(j, "gpus_per_host", 8, where, 1, 1024),
        extra=extra,
        gpus_from_topology="gpus_per_host" not in j,
    )


def load_job_yaml(path) -> list[Job]:
    """Jobs from a YAML file: a mapping with `jobs:` (or one job); every field is checked, names must be unique."""
    from c4.traffic.names import load_yaml_unique  # lazy: names imports topology, like this module

    spec = load_yaml_unique(path)
    items = spec.get("jobs", [spec]) if isinstance(spec, dict) else None
    if not items or not isinstance(items, list):
        raise TopologyError(f"{path}: expected `jobs:` with at least one job")
    jobs = [_load_job(j, i, path) for i, j in enumerate(items)]
    names: set[str] = set()
    for job in jobs:
        if job.name in names:
            raise TopologyError(f"{path}: two jobs are named {job.name!r}")
        names.add(job.name)
    return jobs


def fit_jobs(jobs: list[Job], topo: Topology, path: object) -> None:
    """Check every job's hosts are in topo and fit its GPUs per host; an unset gpus_per_host becomes the hosts' fewest."""
    for job in jobs:
        for h in job.hosts:
            if h not in topo.hosts:
                raise TopologyError(f"{path}: job {job.name!r}: host {h!r} is not in the topology")
        fewest = min(job.hosts, key=lambda h: topo.hosts[h].gpus)
        gpus = topo.hosts[fewest].gpus
        if job.gpus_from_topology:
            job.gpus_per_host = gpus
        elif job.gpus_per_host > gpus:
            raise TopologyError(
                f"{path}: job {job.name!r}: gpus_per_host {job.gpus_per_host} exceeds host {fewest!r}'s {gpus} GPUs"
            )
