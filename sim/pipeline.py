"""One training job in real structure (TP x PP x DP, optional EP), simulated op by op with a 1F1B schedule.

A forward discrete-event simulation: every rank runs Megatron's non-interleaved 1F1B program (warm-up
forwards, steady one-forward-one-backward, cool-down backwards) per step, between a data_load at the
step's start and the data-parallel collectives and optimizer after its last backward. A compute op
takes its rank's time; a pipeline send and its receive both end at the later of their two starts plus
the transfer time; a collective ends for every member at the last member's start plus its transfer
time. Causes (``Cause``) slow ops of chosen ranks; a second run with the same seed and no causes gives
the ground truth (``PipelineTruth``): who is a cause, who only waited, and what it cost the step.

The output is a training-step trace (docs/step-trace.md): one row per op per rank.
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
from dataclasses import dataclass, field

import numpy as np
import polars as pl

__all__ = ["CAUSE_KINDS", "Cause", "PipelineJob", "PipelineTruth", "simulate"]

#: What a cause can be: the five attribution classes, and a rank that stops issuing work (a hang).
CAUSE_KINDS = ("slow_worker", "stage_imbalance", "data_imbalance", "cpu_stall", "slow_comm", "hang")
#: Ops a rank computes on its GPU (what slow_worker, stage_imbalance and data_imbalance scale).
_COMPUTE = ("forward", "backward")
#: Unix time of a trace's first op unless told otherwise (2027-01-15, like the bench's epoch).
T0_S = 1_800_000_000.0
#: The trace's columns and their types (required ones first, then the optional ones this writes).
SCHEMA = {
    "job": pl.String,
    "rank": pl.Int64,
    "dp_rank": pl.Int64,
    "pp_stage": pl.Int64,
    "tp_rank": pl.Int64,
    "step": pl.Int64,
    "op": pl.String,
    "start_s": pl.Float64,
    "duration_s": pl.Float64,
    "microbatch": pl.Int64,
    "host": pl.String,
    "local_rank": pl.Int64,
    "comm": pl.String,
    "ep_rank": pl.Int64,
}


@dataclass
class PipelineJob:
    """A job's shape, placement and nominal op times (seconds per op on one rank)."""

    name: str = "train"
    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1  # expert parallel: groups of ``ep`` data-parallel ranks exchange tokens (all_to_all)
    microbatches: int = 1
    hosts: list[str] = field(default_factory=list)  # rank r runs on hosts[r // gpus_per_host]
    gpus_per_host: int = 8
    forward_s: float = 0.020  # one microbatch through one stage
    backward_s: float = 0.040
    p2p_s: float = 0.002  # one activation (or its gradient) to the adjacent stage
    tp_comm_s: float = 0.002  # the tensor-parallel all-reduces of one forward or backward
    ep_comm_s: float = 0.003  # the expert-parallel all-to-all of one forward or backward
    dp_comm_s: float = (
        0.030  # one data-parallel collective (all_reduce, or each of reduce_scatter/all_gather)
    )
    optimizer_s: float = 0.010
    data_load_s: float = 0.005
    jitter: float = 0.02  # sigma of the lognormal factor on every op
    distributed_optimizer: bool = (
        False  # reduce_scatter, optimizer, all_gather instead of all_reduce, optimizer
    )
    checkpoint_every_steps: int = 0  # a checkpoint op on every rank ending every Nth step (0: never)
    checkpoint_s: float = 0.05  # one rank's checkpoint save (part of the ideal step)

    def __post_init__(self) -> None:
        for k in ("tp", "pp", "dp", "ep", "microbatches"):
            if getattr(self, k) < 1:
                raise ValueError(f"job {self.name}: {k}={getattr(self, k)} must be >= 1")
        if self.checkpoint_every_steps < 0 or self.checkpoint_s < 0:
            raise ValueError(
                f"job {self.name}: checkpoint_every_steps={self.checkpoint_every_steps} and "
                f"checkpoint_s={self.checkpoint_s} must be >= 0"
            )
        if self.dp % self.ep:
            raise ValueError(f"job {self.name}: ep={self.ep} must divide dp={self.dp}")
        if self.hosts and len(self.hosts) * self.gpus_per_host < self.world:
            raise ValueError(
                f"job {self.name}: {self.world} ranks do not fit on {len(self.hosts)} hosts x {self.gpus_per_host} GPUs"
            )

    @property
    def world(self) -> int:
        """Ranks in the job."""
        return self.tp * self.pp * self.dp

    def rank(self, pp_stage: int, dp_rank: int, tp_rank: int) -> int:
        """Global rank (Megatron's order: tensor-parallel fastest, then data-parallel, pipeline slowest)."""
        return tp_rank + self.tp * (dp_rank + self.dp * pp_stage)

    def coords(self, rank: int) -> tuple[int, int, int]:
        """(pp_stage, dp_rank, tp_rank) of a global rank."""
        return rank // (self.tp * self.dp), rank // self.tp % self.dp, rank % self.tp

    def host_of(self, rank: int) -> tuple[str, int]:
        """(host, local rank) of a global rank ("", rank when the job has no placement)."""
        if not self.hosts:
            return "", rank
        return self.hosts[rank // self.gpus_per_host], rank % self.gpus_per_host

    def stage_ranks(self, pp_stage: int) -> list[int]:
        """Every rank of one pipeline stage."""
        return [self.rank(pp_stage, d, t) for d in range(self.dp) for t in range(self.tp)]

    def replica_ranks(self, dp_rank: int) -> list[int]:
        """Every rank of one data-parallel replica (all stages, all tensor-parallel ranks)."""
        return [self.rank(s, dp_rank, t) for s in range(self.pp) for t in range(self.tp)]

    def checkpoints_at(self, step: int) -> bool:
        """Whether step ``step`` (counted from the job's first, across restarts) ends with a checkpoint."""
        n = self.checkpoint_every_steps
        return n > 0 and (step + 1) % n == 0

    def program(self, pp_stage: int, checkpoint: bool = False) -> list[tuple[tuple[str, int], ...]]:
        """One step of a stage's ranks: phases of (op, microbatch), one op each, in the order they run.

        Megatron's non-interleaved 1F1B: ``min(pp - stage - 1, m)`` warm-up forwards, then one forward
        and one backward at a time, then the remaining backwards. Megatron batches the steady state's
        send+receive with one neighbour (posted together); run one after the other, both neighbours take
        the forward transfer first, which keeps the schedule free of deadlock and every rank's ops in one
        order that both ends of a transfer agree on (a replay of the trace finds no cycle).
        """
        m, first, last = self.microbatches, pp_stage == 0, pp_stage == self.pp - 1
        warm = min(self.pp - pp_stage - 1, m)
        rest = m - warm
        out: list[tuple[tuple[str, int], ...]] = [(("data_load", -1),)]

        def compute(op: str, mb: int) -> None:
            out.append(((op, mb),))
            if self.tp > 1:
                out.append(((f"tp_{op}", mb),))
            if self.ep > 1:
                out.append(((f"ep_{op}", mb),))

        for i in range(warm):
            if not first:
                out.append((("recv_forward", i),))
            compute("forward", i)
            if not last:
                out.append((("send_forward", i),))
        if rest and not first:
            out.append((("recv_forward", warm),))
        for i in range(rest):
            compute("forward", warm + i)
            if not last:  # batched in Megatron; here one after the other, the forward transfer first
                out += [(("send_forward", warm + i),), (("recv_backward", i),)]
            compute("backward", i)
            if not first:
                if i == rest - 1:
                    out.append((("send_backward", i),))
                else:  # the same pair as the previous stage's, so the forward transfer first here too
                    out += [(("recv_forward", warm + i + 1),), (("send_backward", i),)]
        for i in range(warm):
            if not last:
                out.append((("recv_backward", rest + i),))
            compute("backward", rest + i)
            if not first:
                out.append((("send_backward", rest + i),))
        if self.dp == 1:  # no data parallelism: nothing to reduce
            out.append((("optimizer", -1),))
        elif self.distributed_optimizer:
            out += [(("reduce_scatter", -1),), (("optimizer", -1),), (("all_gather", -1),)]
        else:
            out += [(("all_reduce", -1),), (("optimizer", -1),)]
        if checkpoint:  # every rank saves its shard after the optimizer (a host op)
            out.append((("checkpoint", -1),))
        return out


@dataclass
class Cause:
    """Why a job is slow: a kind (``CAUSE_KINDS``), the ranks it acts on, how much, from which step.

    - slow_worker: the ranks' forward, backward and optimizer take ``factor`` times as long.
    - stage_imbalance: the same for forward/backward of ``ranks`` (a whole stage: ``PipelineJob.stage_ranks``).
    - data_imbalance: every step one data-parallel replica, drawn among those of ``ranks`` (empty: all),
      computes ``factor`` times as long (it drew the long sequences).
    - cpu_stall: the ranks' data_load takes ``factor`` times as long, and each step a pause of ``stall_s``
      (a GC pause) comes before one forward drawn at random.
    - slow_comm: pipeline transfers between the ranks and their peers in the next stage take ``factor``
      times as long, both ways (a slow link of that stage boundary).
    - hang: the ranks issue nothing from ``onset_step`` on.
    """

    kind: str
    ranks: list[int] = field(default_factory=list)
    factor: float = 2.0
    onset_step: int = 0
    stall_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in CAUSE_KINDS:
            raise ValueError(f"cause kind {self.kind!r}: expected one of {CAUSE_KINDS}")
        if self.factor <= 0 or self.stall_s < 0:
            raise ValueError(f"cause {self.kind}: factor {self.factor} must be > 0 and stall_s >= 0")


@dataclass
class PipelineTruth:
    """Ground truth of one simulated job: the causes, who they are, who only waited, what they cost."""

    job: str
    causes: list[Cause]
    blamed: set[int]  # ranks that are a cause
    victims: set[int]  # other ranks whose ops ended later than without the causes
    true_slowdown_frac: (
        float  # median step time with the causes / without them - 1, over steps from the onset
    )
    step_s: list[float] = field(default_factory=list)  # each completed step's time with the causes
    ideal_step_s: list[float] = field(default_factory=list)  # the same steps without them
    ideal_run_step_s: list[float] = field(default_factory=list)  # every simulated step's time without them


@dataclass
class _Run:
    """One simulation: per rank the ops it completed, as (step, op, microbatch, comm, start_s, duration_s)."""

    ops: list[list[tuple[int, str, int, str, float, float]]]
    step_end_s: list[float]  # per completed step: when its last op ended
    slowed: set[int]  # ranks a data_imbalance cause actually slowed


class _Sim:
    """The discrete-event run of one job for ``steps`` steps under ``causes``."""

    def __init__(
        self, job: PipelineJob, steps: int, causes: list[Cause], seed: int, t0_s: float, first_step: int = 0
    ) -> None:
        self.job, self.steps, self.causes, self.t0_s = job, steps, causes, t0_s
        self.programs = [job.program(s) for s in range(job.pp)]
        self.saving = [job.program(s, checkpoint=True) for s in range(job.pp)]  # steps ending in a checkpoint
        self.checkpoint = [job.checkpoints_at(first_step + i) for i in range(steps)]
        rng = np.random.default_rng(seed)
        # the same draws as before checkpoints existed unless the job saves any (seeded scenarios stay put)
        width = max(len(p) for p in (self.saving if job.checkpoint_every_steps else self.programs)) * 2
        # every op's jitter, drawn before any cause acts: a run without causes sees the same draws
        self.jitter = rng.lognormal(0.0, job.jitter, size=(steps, job.world, width)) if job.jitter else None
        self.send_index = {
            (stage, op, mb): 2 * k + i
            for stage, prog in enumerate(self.programs)
            for k, entries in enumerate(prog)
            for i, (op, mb) in enumerate(entries)
            if op.startswith("send")
        }
        self.slowed: set[int] = set()  # ranks a data_imbalance cause slowed
        self.picks: list[dict[int, tuple[int, int]]] = []  # per cause: step -> (replica or rank, microbatch)
        for i, c in enumerate(causes):
            r = random.Random(f"{seed}:{i}:{c.kind}")
            if c.kind == "data_imbalance":
                pool = sorted({job.coords(x)[1] for x in c.ranks}) or list(range(job.dp))
                self.picks.append({s: (r.choice(pool), -1) for s in range(steps)})
            elif c.kind == "cpu_stall":
                self.picks.append({s: (-1, r.randrange(job.microbatches)) for s in range(steps)})
            else:
                self.picks.append({})

    def program(self, rank: int, step: int) -> list[tuple[tuple[str, int], ...]]:
        """The program a rank runs in a step (local index): its stage's, with a checkpoint when one is due."""
        stage = self.job.coords(rank)[0]
        return self.saving[stage] if self.checkpoint[step] else self.programs[stage]

    def _jit(self, step: int, rank: int, k: int) -> float:
        return 1.0 if self.jitter is None else float(self.jitter[step, rank, k])

    def base_s(self, op: str) -> float:
        """Nominal duration of an op."""
        j = self.job
        if op.startswith("tp_"):
            return j.tp_comm_s
        if op.startswith("ep_"):
            return j.ep_comm_s
        return {
            "data_load": j.data_load_s,
            "checkpoint": j.checkpoint_s,
            "forward": j.forward_s,
            "backward": j.backward_s,
            "optimizer": j.optimizer_s,
            "all_reduce": j.dp_comm_s,
            "reduce_scatter": j.dp_comm_s,
            "all_gather": j.dp_comm_s,
        }.get(op, j.p2p_s)

    def own_s(self, step: int, rank: int, k: int, op: str, mb: int) -> tuple[float, float]:
        """(pause before, duration) of a rank's own (non-waiting) op under the causes."""
        d = self.base_s(op) * self._jit(step, rank, k)
        pause = 0.0
        for c, picks in zip(self.causes, self.picks, strict=True):
            if step < c.onset_step:
                continue
            mine = rank in c.ranks
            if c.kind == "slow_worker" and mine and op in (*_COMPUTE, "optimizer"):
                d *= c.factor
            elif c.kind == "stage_imbalance" and mine and op in _COMPUTE:
                d *= c.factor
            elif c.kind == "data_imbalance" and op in _COMPUTE and self.job.coords(rank)[1] == picks[step][0]:
                d *= c.factor
                self.slowed.add(rank)
            elif c.kind == "cpu_stall" and mine:
                if op == "data_load":
                    d *= c.factor
                elif op == "forward" and mb == picks[step][1]:
                    pause += c.stall_s
        return pause, d

    def transfer_s(self, step: int, src: int, dst: int, k: int) -> float:
        """A pipeline transfer from src to dst (jitter of the sender's op), under slow_comm causes."""
        d = self.job.p2p_s * self._jit(step, src, k)
        for c in self.causes:
            if c.kind == "slow_comm" and step >= c.onset_step:
                lo, hi = min(src, dst), max(src, dst)
                if lo in c.ranks and hi == lo + self.job.tp * self.job.dp:
                    d *= c.factor
        return d

    def hung(self, rank: int, step: int) -> bool:
        """Whether a hang cause stops this rank before it starts this step."""
        return any(c.kind == "hang" and rank in c.ranks and step >= c.onset_step for c in self.causes)

    def _comm(self, op: str, rank: int) -> tuple[str, list[int]]:
        """(communicator name, member ranks) of a collective op of a rank."""
        j = self.job
        s, d, t = j.coords(rank)
        if op.startswith("tp_"):
            return f"{j.name}/tp.s{s}.d{d}", [j.rank(s, d, x) for x in range(j.tp)]
        if op.startswith("ep_"):
            g = d // j.ep
            return f"{j.name}/ep.s{s}.t{t}.g{g}", [j.rank(s, g * j.ep + x, t) for x in range(j.ep)]
        return f"{j.name}/dp.s{s}.t{t}", [j.rank(s, x, t) for x in range(j.dp)]

    def _peer(self, op: str, rank: int) -> tuple[int, int, int]:
        """(peer rank, sender, receiver) of a pipeline op."""
        hop = self.job.tp * self.job.dp
        peer = rank + hop if op in ("send_forward", "recv_backward") else rank - hop
        return (peer, rank, peer) if op.startswith("send") else (peer, peer, rank)

    def run(self) -> _Run:
        """Advance every rank as far as its dependencies allow until all steps are done (or hung)."""
        j = self.job
        world = j.world
        ready = [self.t0_s] * world
        step = [0] * world
        phase = [0] * world
        ops: list[list[tuple[int, str, int, str, float, float]]] = [[] for _ in range(world)]
        posted: dict[tuple, dict[int, float]] = {}  # rendezvous key -> member -> its post time
        occ: list[dict[str, int]] = [
            {} for _ in range(world)
        ]  # per rank: collective op -> occurrences this step
        step_end = [0.0] * self.steps
        done_ranks = [0] * self.steps
        progress = True
        while progress:
            progress = False
            for r in range(world):
                while step[r] < self.steps and not self.hung(r, step[r]):
                    if not self._advance(r, step, phase, ready, ops, posted, occ):
                        break
                    progress = True
                    if phase[r] == len(self.program(r, step[r])):
                        st = step[r]
                        step_end[st] = max(step_end[st], ready[r])
                        done_ranks[st] += 1
                        step[r], phase[r], occ[r] = st + 1, 0, {}
        if any(step[r] < self.steps for r in range(world)) and not any(c.kind == "hang" for c in self.causes):
            raise RuntimeError(f"job {j.name}: the schedule deadlocked (steps reached: {sorted(set(step))})")
        completed = [e for e, n in zip(step_end, done_ranks, strict=True) if n == world]
        return _Run(ops, completed, self.slowed)

    def _advance(self, r, step, phase, ready, ops, posted, occ) -> bool:
        """Run rank r's current phase if its peers have posted; False if it must wait."""
        st, k = step[r], phase[r]
        entries = self.program(r, st)[k]
        t = ready[r]
        first = entries[0][0]
        if first in ("data_load", "forward", "backward", "optimizer", "checkpoint"):
            pause, d = self.own_s(st, r, 2 * k, first, entries[0][1])
            ops[r].append((st, first, entries[0][1], "", t + pause, d))
            ready[r] = t + pause + d
            phase[r] += 1
            return True
        if first in ("all_reduce", "reduce_scatter", "all_gather") or first.startswith(("tp_", "ep_")):
            comm, members = self._comm(first, r)
            n = occ[r].get(comm, 0)
            key = ("coll", comm, st, n)
            got = posted.setdefault(key, {})
            got[r] = t
            if len(got) < len(members):
                return False
            leader = min(members)
            end = max(got.values()) + self.base_s(first) * self._jit(st, leader, 2 * k)
            op = (
                "all_reduce"
                if first.startswith("tp_")
                else "all_to_all"
                if first.startswith("ep_")
                else first
            )
            ops[r].append((st, op, -1, comm, t, end - t))  # grouped by comm and occurrence, not microbatch
            occ[r][comm] = n + 1
            ready[r] = end
            phase[r] += 1
            return True
        # a pipeline send or receive: post it, finish when the peer has posted its half
        op, mb = entries[0]
        peer, src, dst = self._peer(op, r)
        key = ("p2p", "fwd" if op.endswith("forward") else "bwd", src, dst, st, mb)
        got = posted.setdefault(key, {})
        got.setdefault(r, t)
        if peer not in got:
            return False
        # the transfer's jitter is the sender's, so both ends compute the same time
        end = max(got.values()) + self.transfer_s(
            st, src, dst, self._send_index(src, op.replace("recv", "send"), mb)
        )
        ops[r].append((st, op, mb, "", t, end - t))
        ready[r] = end
        phase[r] += 1
        return True

    def _send_index(self, src: int, send_op: str, mb: int) -> int:
        """The jitter index of a send in the sender's program (2 x phase + position in the phase)."""
        return self.send_index[(self.job.coords(src)[0], send_op, mb)]


def _frame(job: PipelineJob, run: _Run, first_step: int = 0) -> pl.DataFrame:
    """The run's ops as a step trace (steps numbered from ``first_step``)."""
    cols: dict[str, list] = {k: [] for k in SCHEMA}
    for r, rows in enumerate(run.ops):
        s, d, t = job.coords(r)
        host, local = job.host_of(r)
        for step, op, mb, comm, start, dur in rows:
            cols["job"].append(job.name)
            cols["rank"].append(r)
            cols["dp_rank"].append(d)
            cols["pp_stage"].append(s)
            cols["tp_rank"].append(t)
            cols["step"].append(first_step + step)
            cols["op"].append(op)
            cols["start_s"].append(start)
            cols["duration_s"].append(dur)
            cols["microbatch"].append(mb if mb >= 0 else None)
            cols["host"].append(host or None)
            cols["local_rank"].append(local)
            cols["comm"].append(comm or None)
            cols["ep_rank"].append(d % job.ep if job.ep > 1 else None)
    df = pl.DataFrame(cols, schema=SCHEMA)
    if job.ep == 1:
        df = df.drop("ep_rank")
    if not job.hosts:
        df = df.drop("host")
    return df


def _step_times(ends: list[float], t0_s: float) -> list[float]:
    """Each step's time: from the previous step's last op to its own."""
    return [e - p for e, p in zip(ends, [t0_s, *ends[:-1]], strict=False)]


def _truth(job: PipelineJob, causes: list[Cause], run: _Run, ideal: _Run, t0_s: float) -> PipelineTruth:
    """Causes vs victims and the true slowdown, from the run with the causes and the one without."""
    blamed: set[int] = set()
    hop = job.tp * job.dp
    for c in causes:
        if c.kind == "data_imbalance":
            blamed |= run.slowed
        elif c.kind == "slow_comm":
            blamed |= set(c.ranks) | {r + hop for r in c.ranks if r + hop < job.world}
        else:
            blamed |= set(c.ranks)
    victims = set()
    for r in range(job.world):
        if r in blamed:
            continue
        mine, base = run.ops[r], ideal.ops[r]
        if len(mine) < len(base) or any(
            a[4] + a[5] > b[4] + b[5] + 1e-9 for a, b in zip(mine, base, strict=False)
        ):
            victims.add(r)
    actual, nominal = _step_times(run.step_end_s, t0_s), _step_times(ideal.step_end_s, t0_s)
    onset = min((c.onset_step for c in causes), default=0)
    pairs = [(a, b) for i, (a, b) in enumerate(zip(actual, nominal, strict=False)) if i >= onset]
    if any(c.kind == "hang" for c in causes) and len(actual) < len(nominal):
        frac = math.inf
    elif pairs:
        frac = statistics.median(a for a, _ in pairs) / statistics.median(b for _, b in pairs) - 1
    else:
        frac = 0.0
    return PipelineTruth(
        job.name, list(causes), blamed, victims, frac, actual, nominal[: len(actual)], nominal
    )


def simulate(
    job: PipelineJob,
    steps: int,
    causes: list[Cause] | None = None,
    seed: int = 0,
    t0_s: float = T0_S,
    first_step: int = 0,
    onsets_at_s: list[float] | None = None,
) -> tuple[pl.DataFrame, PipelineTruth]:
    """``steps`` training steps of ``job`` under ``causes``: the step trace and its ground truth.

    ``first_step``: the number of the first step (a run relaunched from a checkpoint; it also decides
    which steps checkpoint). ``onsets_at_s``: one time per cause (the clock of ``t0_s``); each cause then
    acts from the first step that starts at or after it in the run without causes (its ``onset_step``,
    counted from this run's first step, is set here).
    """
    causes = list(causes or [])
    for c in causes:
        bad = [r for r in c.ranks if not 0 <= r < job.world]
        if bad:
            raise ValueError(
                f"cause {c.kind}: ranks {bad} are not ranks of job {job.name} (0..{job.world - 1})"
            )
    if onsets_at_s is not None and len(onsets_at_s) != len(causes):
        raise ValueError(f"{len(onsets_at_s)} onset times for {len(causes)} causes")
    ideal = _Sim(job, steps, [], seed, t0_s, first_step).run()
    if onsets_at_s is not None:
        starts = [t0_s, *ideal.step_end_s[:-1]]
        for c, at_s in zip(causes, onsets_at_s, strict=True):
            c.onset_step = bisect.bisect_left(starts, at_s)
    run = _Sim(job, steps, causes, seed, t0_s, first_step).run() if causes else ideal
    return _frame(job, run, first_step), _truth(job, causes, run, ideal, t0_s)
