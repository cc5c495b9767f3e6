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

Restarts and checkpoints (``c4.sim.job_runs``): ``checkpoint_every_steps`` (a ``checkpoint`` op on every rank
ending every Nth step, ``checkpoint_s`` long; 0: never), ``restart_after_s`` (a hung run is killed this long
after its last op ended and relaunched; None: it stays hung) and ``restart_s`` (from the kill to the next
run's first op). A ``job_restart`` fault kills the job's run at its ``at_s`` (its ``job``, else the job on
its ``node``). A relaunched run resumes from its last checkpoint with new communicators (NCCL makes a new
``commId`` at every init: derived from the job and the run number), so Inspector sequence numbers begin
again and new init lines are appended to each node's NCCL log; nothing is written between runs (the
GPUs idle). ``accounting_truth`` says what each job's wall time went to (``c4.sim.goodput_truth``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from c4.sim.faults import FAULT_KINDS, Fault
from c4.sim.goodput_truth import job_accounting_truth
from c4.sim.job_runs import TwinRun, simulate_runs
from c4.sim.pipeline import Cause, PipelineJob, PipelineTruth
from c4.traffic.generators import leaf_spine
from c4.traffic.topology import Topology

__all__ = ["JobsStepOutput", "JobsTwin", "TwinJob"]

#: Job keys that place or size the job in the twin rather than shape its schedule.
_PLACEMENT_KEYS = ("first_node", "nodes", "grad_bytes", "activation_bytes")
#: Job keys that say when a run is killed and how long its relaunch takes (``c4.sim.job_runs``).
_RESTART_KEYS = ("restart_after_s", "restart_s")
#: From a kill to the relaunched run's first op unless the job says otherwise (scheduler, load, NCCL init).
RESTART_S = 30.0
#: Nominal op times of a twin job unless its scenario says otherwise: a step of about a second.
TWIN_OP_TIMES = {"forward_s": 0.04, "backward_s": 0.08, "p2p_s": 0.004, "tp_comm_s": 0.004, "dp_comm_s": 0.08}


@dataclass
class TwinJob:
    """One job of the twin: its shape and placement, the message sizes, its runs, simulated trace and truth."""

    spec: PipelineJob
    grad_bytes: float
    activation_bytes: float
    causes: list[tuple[Fault, Cause]] = field(default_factory=list)
    restarts: list[Fault] = field(default_factory=list)  # job_restart faults of this job
    restart_after_s: float | None = None  # a hung run is killed this long after its last op (None: never)
    restart_s: float = RESTART_S  # kill -> the next run's first op
    runs: list[TwinRun] = field(default_factory=list)
    trace: pl.DataFrame | None = None  # every run's ops sorted by their end, times in simulated seconds
    truth: PipelineTruth | None = None  # of the first run a cause acts on (else the first run)
    step_start_s: list[float] = field(default_factory=list)  # each step's start without the causes (run 0)
    end_s: np.ndarray | None = None  # the trace's op ends (sorted)

    @property
    def hung(self) -> bool:
        """Whether a run of the job hangs (its trace stops until the run is killed, if ever)."""
        return any(r.hung for r in self.runs)

    def run_at(self, t: float) -> TwinRun | None:
        """The run alive at t (started before, not killed by then); None before the first or between runs."""
        for r in self.runs:
            if r.start_s < t and (r.kill_s is None or t <= r.kill_s):
                return r
        return None

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
    restarting_jobs: set[str] = field(default_factory=set)  # killed, the next run not started: GPUs idle
    relaunched: dict[str, int] = field(default_factory=dict)  # job -> run whose first op starts in the tick


def _comm_id(job: str, comm: str, run: int = 0) -> str:
    """A stable communicator id for a job's communicator in one of its runs (hex, as NCCL prints commId and
    Inspector ``id``); a relaunch initializes new communicators, so every run has its own."""
    key = f"{job}/{comm}" if run == 0 else f"{job}#run{run}/{comm}"
    return "0x" + hashlib.blake2b(key.encode(), digest_size=7).hexdigest().lstrip("0")


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
            if kind.restarts_job(self, f):
                self.twin_jobs[self._restart_job(f)].restarts.append(f)
                continue
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
        restart = {k: raw.pop(k) for k in _RESTART_KEYS if k in raw}
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
        every = raw.get("checkpoint_every_steps", 0)
        if isinstance(every, bool) or not isinstance(every, int):
            raise ValueError(f"job {name}: checkpoint_every_steps={every!r} must be a whole number of steps")
        after, restart_s = _restart_keys(name, restart)
        spec = PipelineJob(name=name, hosts=hosts, gpus_per_host=self.gpus, **{**TWIN_OP_TIMES, **raw})
        self.job_specs[name] = spec
        grad = float(place.get("grad_bytes", (16 << 30) / (spec.tp * spec.pp)))
        self.twin_jobs[name] = TwinJob(
            spec,
            grad,
            float(place.get("activation_bytes", 64 << 20)),
            restart_after_s=after,
            restart_s=restart_s,
        )

    def _restart_job(self, fault: Fault) -> str:
        """The job a job_restart fault relaunches: its ``job``, else the job on its ``node``, else the only job."""
        if not fault.job and not fault.node and len(self.job_specs) == 1:
            return next(iter(self.job_specs))
        if not fault.job and not fault.node:
            raise ValueError(f"fault {fault.kind} at {fault.at_s} s: say which job (job or node) it restarts")
        return self.job_of_fault(fault)

    def _simulate(self, tj: TwinJob, seed: int) -> None:
        """The job's runs over the horizon, each fault's cause from the step at its onset in its run."""
        tj.runs = simulate_runs(
            tj.spec, tj.causes, tj.restarts, self.horizon_s, seed, tj.restart_after_s, tj.restart_s
        )
        first = tj.runs[0]
        tj.step_start_s = [first.ideal_step_start_s(k) for k in range(len(first.truth.ideal_run_step_s) + 1)]
        tj.truth = next((r.truth for r in tj.runs if r.causes), first.truth)
        tj.trace = pl.concat([r.trace for r in tj.runs], how="vertical")
        tj.end_s = tj.trace["end_s"].to_numpy()

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

    def comm_id(self, job: str, comm: str, run: int = 0) -> str:
        """NCCL's id of one of a job's communicators (``tp.s0.d1``, ``dp.s0.t3``, ``pp.d0.t3``, ``ep...``,
        ``world``) in one of its runs (0: the first launch)."""
        return _comm_id(job, comm, run)

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
        restarting: set[str] = set()
        relaunched: dict[str, int] = {}
        nic_bytes: dict[tuple[str, int], float] = {}
        for name, tj in self.twin_jobs.items():
            lo, hi = np.searchsorted(tj.end_s, [t0, t1], side="left")
            rows = tj.trace.slice(int(lo), int(hi - lo)).to_dicts()
            ops[name] = rows
            run = tj.run_at(t1)
            if run is None:
                restarting.add(name)
            elif run.hung and t1 > run.last_end_s:
                blocked.add(name)
            for r in tj.runs[1:]:
                if t0 <= r.start_s < t1:
                    relaunched[name] = r.index
            for (
                r
            ) in rows:  # what leaves the node: data-parallel collectives and pipeline sends (TP rides NVLink)
                if r["op"] in ("all_reduce", "reduce_scatter", "all_gather") and "/dp." in (r["comm"] or ""):
                    key = (r["host"], r["local_rank"] % self.nics)
                    nic_bytes[key] = nic_bytes.get(key, 0.0) + tj.grad_bytes
                elif r["op"].startswith("send"):
                    key = (r["host"], r["local_rank"] % self.nics)
                    nic_bytes[key] = nic_bytes.get(key, 0.0) + tj.activation_bytes
        out = JobsStepOutput(
            t0,
            self.seq,
            self.tick_s,
            ops,
            blocked,
            nic_bytes,
            restarting_jobs=restarting,
            relaunched=relaunched,
        )
        self.t = t1
        self.seq += 1
        return out

    # -- ground truth ---------------------------------------------------------------------------

    def pipeline_truth(self) -> dict[str, PipelineTruth]:
        """Each job's ground truth: cause ranks, victims, true step slowdown."""
        return {name: tj.truth for name, tj in self.twin_jobs.items()}

    def ground_truth(self) -> list[dict[str, Any]]:
        """A sim_ground_truth row per fault, with its job, true onset (its step's start), end (the kill of
        its run, if any), cost and victims; the job_restart faults after the causes."""
        rows = []
        for name, tj in self.twin_jobs.items():
            for f, _ in tj.causes:
                run, c = self._run_of(tj, f)
                truth = run.truth
                row = FAULT_KINDS[f.kind].truth(self, f)
                steps = len(truth.ideal_run_step_s)
                row.update(
                    onset_s=run.ideal_step_start_s(c.onset_step) if c.onset_step < steps else f.at_s,
                    end_s=run.kill_s,
                    job=name,
                    node=f.node or tj.spec.hosts[0],
                    # a hang costs the job everything: no finite slowdown (None, so truth.jsonl stays JSON)
                    slowdown_frac=truth.true_slowdown_frac
                    if math.isfinite(truth.true_slowdown_frac)
                    else None,
                    blamed=",".join(f"{name}/rank{r}" for r in sorted(truth.blamed)),
                    affected=",".join(f"{name}/rank{r}" for r in sorted(truth.victims)),
                )
                rows.append(row)
        for name, tj in self.twin_jobs.items():
            for f in tj.restarts:
                row = FAULT_KINDS[f.kind].truth(self, f)
                row.update(job=name, node=f.node or tj.spec.hosts[0])
                rows.append(row)
        return rows

    @staticmethod
    def _run_of(tj: TwinJob, fault: Fault) -> tuple[TwinRun, Cause]:
        """The run a fault's cause acts in, and its cause there (the last run when it came after them all)."""
        for run in tj.runs:
            for f, c in run.causes:
                if f is fault:
                    return run, c
        last = tj.runs[-1]
        return last, Cause(next(c.kind for f, c in tj.causes if f is fault), onset_step=1 << 30)

    def accounting_truth(self, until_s: float | None = None) -> dict[str, dict[str, Any]]:
        """Each job's true account over [its first op's start, until_s] (default: now), by the definitions
        of ``c4.sim.goodput_truth``: wall_s, productive_s, lost_s and its parts hung_s, slowed_s,
        restarting_s, redone_s, ettr, gpus, runs (and ``run_spans``: each run's first step, start, kill and
        what killed it), and per fault (``faults``) the lost seconds it explains."""
        until = self.t if until_s is None else float(until_s)
        if not 0 <= until <= self.horizon_s:
            raise ValueError(f"until_s={until} must lie within the simulated horizon [0, {self.horizon_s}]")
        out = {}
        for name, tj in self.twin_jobs.items():
            faults = [f for f, _ in tj.causes] + tj.restarts
            out[name] = job_accounting_truth(tj.spec, tj.runs, faults, tj.restart_s, until)
        return out

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


def _restart_keys(job: str, keys: dict[str, Any]) -> tuple[float | None, float]:
    """(restart_after_s, restart_s) of a job's keys, checked: seconds >= 0, restart_after_s may be None."""
    after = keys.get("restart_after_s")
    restart_s = keys.get("restart_s", RESTART_S)
    for k, v in (("restart_after_s", after), ("restart_s", restart_s)):
        if v is None and k == "restart_after_s":
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < math.inf:
            raise ValueError(f"job {job}: {k}={v!r} must be a finite number of seconds >= 0")
    return (None if after is None else float(after)), float(restart_s)
