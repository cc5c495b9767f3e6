"""Several training jobs in real structure (TP x PP x DP, 1F1B) sharing the twin's cluster.

A scenario with ``jobs:`` builds this twin instead of ``ClusterTwin``'s single data-parallel job::

    cluster: {nodes: 8, gpus: 8, nics: 8, seed: 1}
    jobs:
      - {name: train-a, tp: 8, pp: 2, dp: 2, microbatches: 8, first_node: 0}
      - {name: train-b, tp: 8, pp: 4, dp: 1, microbatches: 8, nodes: [host4, host5, host6, host7]}
    faults:
      - {kind: slow_worker, at_s: 20, node: host1, gpu: 3, factor: 2.0}

Each job is simulated op by op (``c4.sim.pipeline``) over ``horizon_s`` up front, its faults turned into
pipeline causes from the step that starts at or after their ``at_s``; ``step`` then hands out, tick by
tick, the ops that ended in the tick, which ``c4.sim.job_files`` writes where the real producers would
(NCCL Inspector, NCCL init lines, NVML, and the training-step trace). A job whose rank hangs stops
writing; the other jobs run on. Job keys beyond ``PipelineJob``'s: ``first_node`` or ``nodes``
(placement, one node per ``gpus`` ranks), ``grad_bytes`` (a rank's data-parallel message) and
``activation_bytes`` (a pipeline or tensor-parallel message).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from c4.sim.faults import FAULT_KINDS, Fault
from c4.sim.pipeline import Cause, PipelineJob, PipelineTruth, simulate
from c4.traffic.generators import leaf_spine
from c4.traffic.topology import Topology

__all__ = ["JobsStepOutput", "JobsTwin", "TwinJob"]

#: Job keys that place or size the job in the twin rather than shape its schedule.
_PLACEMENT_KEYS = ("first_node", "nodes", "grad_bytes", "activation_bytes")
#: Nominal op times of a twin job unless its scenario says otherwise: a step of about a second.
TWIN_OP_TIMES = {"forward_s": 0.04, "backward_s": 0.08, "p2p_s": 0.004, "tp_comm_s": 0.004, "dp_comm_s": 0.08}


@dataclass
class TwinJob:
    """One job of the twin: its shape and placement, the message sizes, its simulated trace and truth."""

    spec: PipelineJob
    grad_bytes: float
    activation_bytes: float
    causes: list[tuple[Fault, Cause]] = field(default_factory=list)
    trace: pl.DataFrame | None = None  # ops sorted by their end, times in simulated seconds
    truth: PipelineTruth | None = None
    step_start_s: list[float] = field(default_factory=list)  # each step's start without the causes
    end_s: np.ndarray | None = None  # the trace's op ends (sorted)

    @property
    def hung(self) -> bool:
        """Whether a rank of the job hangs (its trace stops)."""
        return any(c.kind == "hang" for _, c in self.causes)

    @property
    def last_end_s(self) -> float:
        """When the job's last op ended."""
        return float(self.end_s[-1]) if self.end_s is not None and len(self.end_s) else 0.0


@dataclass
class JobsStepOutput:
    """One tick: the ops each job finished in it, which jobs are stuck, and the bytes each NIC sent."""

    t: float
    seq: int
    duration_s: float
    ops: dict[str, list[dict[str, Any]]]  # job -> op rows (simulated seconds) that ended in the tick
    blocked_jobs: set[str]
    nic_bytes: dict[tuple[str, int], float]
    link_changes: list = field(default_factory=list)
    congested_nics: set = field(default_factory=set)
    blocked: bool = False  # per job instead (blocked_jobs); kept for the writer's shared code
    restarted: bool = False


def _comm_id(job: str, comm: str) -> str:
    """A stable communicator id for a job's communicator (hex, as NCCL prints commId and Inspector ``id``)."""
    return "0x" + hashlib.blake2b(f"{job}/{comm}".encode(), digest_size=7).hexdigest().lstrip("0")


@dataclass
class JobsTwin:
    """N nodes x G GPUs x R NICs running several 3D-parallel jobs, each on its own nodes."""

    nodes: int = 8
    gpus: int = 8
    nics: int = 8
    leaves: int = 4
    spines: int = 4
    seed: int = 0
    jobs: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    inspector_verbose: bool = (
        False  # NCCL_INSPECTOR_DUMP_VERBOSE: collective start times in Inspector records
    )
    inspector_tp: bool = (
        True  # Inspector records of the tensor-parallel all-reduces too (one per forward/backward)
    )
    step_trace: bool = True  # the jobs export a training-step trace (most jobs do not: Inspector alone)
    tick_s: float = 1.0  # simulated seconds per ``step``
    horizon_s: float = 240.0  # how long the jobs run (simulated up front)

    def __post_init__(self) -> None:
        if not self.jobs:
            raise ValueError("a jobs scenario needs at least one job")
        self.topo: Topology = leaf_spine(
            self.nodes,
            min(self.leaves, self.nodes),
            self.spines,
            nics_per_host=self.nics,
            gpus_per_host=self.gpus,
        )
        self.hosts = list(self.topo.hosts)
        self.job_specs: dict[str, PipelineJob] = {}
        self.twin_jobs: dict[str, TwinJob] = {}
        self._job_of_host: dict[str, str] = {}
        for i, raw in enumerate(self.jobs):
            self._add_job(i, dict(raw))
        for f in self.faults:
            kind = FAULT_KINDS[f.kind]
            got = kind.cause(self, f)
            if got is None:
                raise ValueError(
                    f"fault kind {f.kind} cannot be injected in a jobs scenario (only job causes)"
                )
            job, cause = got
            self.twin_jobs[job].causes.append((f, cause))
        for i, tj in enumerate(self.twin_jobs.values()):
            self._simulate(tj, self.seed * 1000 + i)
        self.t = 0.0
        self.seq = 0

    def _add_job(self, i: int, raw: dict[str, Any]) -> None:
        """Place one job of the scenario."""
        name = str(raw.pop("name", f"job{i}"))
        if name in self.job_specs:
            raise ValueError(f"job {name!r} appears twice")
        place = {k: raw.pop(k) for k in _PLACEMENT_KEYS if k in raw}
        unknown = set(raw) - set(PipelineJob.__dataclass_fields__) - {"hosts"}
        if unknown or "hosts" in raw or "gpus_per_host" in raw:
            raise ValueError(
                f"job {name}: unknown keys {sorted(unknown | ({'hosts', 'gpus_per_host'} & set(raw)))}"
            )
        world = int(raw.get("tp", 1)) * int(raw.get("pp", 1)) * int(raw.get("dp", 1))
        want = math.ceil(world / self.gpus)
        if "nodes" in place:
            hosts = [str(h) for h in place["nodes"]]
        else:
            first = int(place.get("first_node", 0))
            hosts = self.hosts[first : first + want]
        if len(hosts) != want or any(h not in self.topo.hosts for h in hosts):
            raise ValueError(f"job {name}: {world} ranks need {want} nodes of the cluster, got {hosts}")
        for h in hosts:
            if h in self._job_of_host:
                raise ValueError(f"job {name}: {h} already runs job {self._job_of_host[h]}")
            self._job_of_host[h] = name
        spec = PipelineJob(name=name, hosts=hosts, gpus_per_host=self.gpus, **{**TWIN_OP_TIMES, **raw})
        self.job_specs[name] = spec
        grad = float(place.get("grad_bytes", (16 << 30) / (spec.tp * spec.pp)))
        self.twin_jobs[name] = TwinJob(spec, grad, float(place.get("activation_bytes", 64 << 20)))

    def _simulate(self, tj: TwinJob, seed: int) -> None:
        """The job's whole run: steps to cover the horizon, each fault's cause from the step at its onset."""
        spec = tj.spec
        _, probe = simulate(spec, 2, seed=seed, t0_s=0.0)
        steps = math.ceil(self.horizon_s / min(probe.step_s)) + 2
        _, base = simulate(spec, steps, seed=seed, t0_s=0.0)
        tj.step_start_s = list(np.concatenate([[0.0], np.cumsum(base.step_s)]))
        for f, c in tj.causes:
            c.onset_step = bisect.bisect_left(tj.step_start_s, f.at_s)
        trace, tj.truth = simulate(spec, steps, [c for _, c in tj.causes], seed=seed, t0_s=0.0)
        trace = trace.with_columns((pl.col("start_s") + pl.col("duration_s")).alias("end_s")).sort("end_s")
        tj.trace = trace
        tj.end_s = trace["end_s"].to_numpy()

    # -- identity: who runs where ---------------------------------------------------------------

    def job_name(self, node: str) -> str:
        """The job running on a node ("" when none)."""
        return self._job_of_host.get(node, "")

    def job_of_fault(self, fault: Fault) -> str:
        """The job a fault acts on: its ``job``, else the job on its node."""
        job = fault.job or self.job_name(fault.node)
        if job not in self.job_specs:
            raise ValueError(f"fault {fault.kind}: no job {fault.job or fault.node!r} in the scenario")
        return job

    def rank_at(self, node: str, gpu: int) -> tuple[str, int]:
        """(job, global rank) of the process on a node's GPU."""
        job = self.job_name(node)
        if not job:
            raise ValueError(f"{node} runs no job of the scenario")
        spec = self.job_specs[job]
        rank = spec.hosts.index(node) * self.gpus + gpu
        if not 0 <= gpu < self.gpus or rank >= spec.world:
            raise ValueError(f"{node}/gpu{gpu} runs no rank of job {job}")
        return job, rank

    def local_rank(self, node: str, gpu: int) -> int:
        """The local rank driving NVML GPU ``gpu`` (no CUDA_VISIBLE_DEVICES reordering here)."""
        return gpu

    def gpu_of(self, node: str, local: int) -> int:
        """The NVML GPU of a local rank."""
        return local

    def pid_of(self, node: str, local: int) -> int:
        """Process id of a node's local rank (one process per GPU, as torchrun starts them)."""
        return 20000 + 100 * self.hosts.index(node) + local

    def comm_id(self, job: str, comm: str) -> str:
        """NCCL's id of one of a job's communicators (``tp.s0.d1``, ``dp.s0.t3``, ``pp.d0.t3``, ``ep...``, ``world``)."""
        return _comm_id(job, comm)

    def communicators(self, job: str, rank: int) -> list[tuple[str, int, int]]:
        """(communicator name, this rank's rank in it, its size) for every communicator a rank belongs to."""
        j = self.job_specs[job]
        s, d, t = j.coords(rank)
        out = [("world", rank, j.world)]
        if j.tp > 1:
            out.append((f"tp.s{s}.d{d}", t, j.tp))
        if j.dp > 1:
            out.append((f"dp.s{s}.t{t}", d, j.dp))
        if j.pp > 1:
            out.append((f"pp.d{d}.t{t}", s, j.pp))
        if j.ep > 1:
            out.append((f"ep.s{s}.t{t}.g{d // j.ep}", d % j.ep, j.ep))
        return out

    # -- time -----------------------------------------------------------------------------------

    def step(self) -> JobsStepOutput:
        """Advance one tick: every job's ops that ended in it."""
        t0, t1 = self.t, self.t + self.tick_s
        ops: dict[str, list[dict[str, Any]]] = {}
        blocked: set[str] = set()
        nic_bytes: dict[tuple[str, int], float] = {}
        for name, tj in self.twin_jobs.items():
            lo, hi = np.searchsorted(tj.end_s, [t0, t1], side="left")
            rows = tj.trace.slice(int(lo), int(hi - lo)).to_dicts()
            ops[name] = rows
            if tj.hung and t1 > tj.last_end_s:
                blocked.add(name)
            for (
                r
            ) in rows:  # what leaves the node: data-parallel collectives and pipeline sends (TP rides NVLink)
                if r["op"] in ("all_reduce", "reduce_scatter", "all_gather") and "/dp." in (r["comm"] or ""):
                    key = (r["host"], r["local_rank"] % self.nics)
                    nic_bytes[key] = nic_bytes.get(key, 0.0) + tj.grad_bytes
                elif r["op"].startswith("send"):
                    key = (r["host"], r["local_rank"] % self.nics)
                    nic_bytes[key] = nic_bytes.get(key, 0.0) + tj.activation_bytes
        out = JobsStepOutput(t0, self.seq, self.tick_s, ops, blocked, nic_bytes)
        self.t = t1
        self.seq += 1
        return out

    # -- ground truth ---------------------------------------------------------------------------

    def pipeline_truth(self) -> dict[str, PipelineTruth]:
        """Each job's ground truth: cause ranks, victims, true step slowdown."""
        return {name: tj.truth for name, tj in self.twin_jobs.items()}

    def ground_truth(self) -> list[dict[str, Any]]:
        """A sim_ground_truth row per fault, with its job, true onset (its step's start), cost and victims."""
        rows = []
        for name, tj in self.twin_jobs.items():
            for f, c in tj.causes:
                row = FAULT_KINDS[f.kind].truth(self, f)
                at = tj.step_start_s[c.onset_step] if c.onset_step < len(tj.step_start_s) else f.at_s
                row.update(
                    onset_s=at,
                    end_s=None,
                    job=name,
                    node=f.node or tj.spec.hosts[0],
                    # a hang costs the job everything: no finite slowdown (None, so truth.jsonl stays JSON)
                    slowdown_frac=tj.truth.true_slowdown_frac
                    if math.isfinite(tj.truth.true_slowdown_frac)
                    else None,
                    blamed=",".join(f"{name}/rank{r}" for r in sorted(tj.truth.blamed)),
                    affected=",".join(f"{name}/rank{r}" for r in sorted(tj.truth.victims)),
                )
                rows.append(row)
        return rows

    def connection_paths(self) -> dict[tuple[str, str, int], list[str]]:
        """No fabric model of these jobs' connections (their faults are in the jobs, not the fabric)."""
        return {}

    def switch_capacity_gbps(self) -> dict[str, float]:
        """Nominal rate of every directed switch-to-switch link."""
        switches = set(self.topo.leaves) | set(self.topo.spines) | set(self.topo.cores)
        return {
            f"{x.src}->{x.dst}": x.capacity_gbps
            for x in self.topo.links
            if x.src in switches and x.dst in switches
        }
