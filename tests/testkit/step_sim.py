"""A small forward simulator of a PP x DP training job (1F1B-like order) writing C4's step trace, for tests.

Every rank runs its program in order; a p2p pair ends at the later start plus the link's transfer time;
a collective ends for all members at the last arrival plus its own time. Causes scale own durations or
add host-side gaps; ``simulate(..., causes=[])`` with the same seed gives the run without them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import polars as pl

BASE_S = {
    "data_load": 0.002,
    "forward": 0.010,
    "backward": 0.020,
    "p2p": 0.001,
    "all_reduce": 0.005,
    "optimizer": 0.003,
}


@dataclass
class SimCause:
    """What slows the job: kind one of slow_worker, stage, data_imbalance, cpu_stall, slow_link, slow_coll
    (the data-parallel all-reduce of ``stage`` and TP rank ``ranks[0]``)."""

    kind: str
    ranks: list[int] = field(
        default_factory=list
    )  # slow_worker / cpu_stall: the rank; slow_link: [sender, receiver]
    stage: int = -1
    factor: float = 2.0
    gap_s: float = 0.0  # cpu_stall: delay before the first forward of a step
    every: int = 1  # cpu_stall: on every n-th step
    onset_step: int = 0  # the cause acts from this step on
    turns: list[int] = field(
        default_factory=list
    )  # data_imbalance: per step, the replica slow (else a random rank)


def rank_of(pp_stage: int, dp_rank: int, dp: int, tp_rank: int = 0, tp: int = 1) -> int:
    """Global rank of a stage, replica and tensor-parallel rank (stage-major, TP innermost)."""
    return (pp_stage * dp + dp_rank) * tp + tp_rank


def _megatron_program(s: int, pp: int, mb: int) -> list[tuple[str, int | None, bool]]:
    """Megatron-LM's 1F1B order with its batched p2p (send_forward_recv_backward, send_backward_recv_forward):
    (op, microbatch, issued together with the op before)."""
    warm, first, last = min(pp - s - 1, mb), s == 0, s == pp - 1
    rem = mb - warm
    prog: list[tuple[str, int | None, bool]] = [("data_load", None, False)]
    for m in range(warm):
        prog += [("recv_forward", m, False)] * (not first) + [("forward", m, False)]
        prog += [("send_forward", m, False)] * (not last)
    if rem and not first:
        prog.append(("recv_forward", warm, False))
    for i in range(rem):
        prog.append(("forward", warm + i, False))
        if not last:
            prog += [("send_forward", warm + i, False), ("recv_backward", i, True)]
        prog.append(("backward", i, False))
        if not first:
            prog.append(("send_backward", i, False))
            if i < rem - 1:
                prog.append(("recv_forward", warm + i + 1, True))
    for i in range(rem, mb):
        prog += [("recv_backward", i, False)] * (not last) + [("backward", i, False)]
        prog += [("send_backward", i, False)] * (not first)
    return [*prog, ("all_reduce", None, False), ("optimizer", None, False)]


def _program(s: int, pp: int, mb: int) -> list[tuple[str, int | None]]:
    warm = min(pp - s - 1, mb)
    prog: list[tuple[str, int | None]] = [("data_load", None)]

    def fwd(m: int, send: bool = True) -> list[tuple[str, int | None]]:
        ops: list[tuple[str, int | None]] = []
        if s > 0:
            ops.append(("recv_forward", m))
        ops.append(("forward", m))
        if send and s < pp - 1:
            ops.append(("send_forward", m))
        return ops

    def bwd(m: int) -> list[tuple[str, int | None]]:
        ops: list[tuple[str, int | None]] = []
        if s < pp - 1:
            ops.append(("recv_backward", m))
        ops.append(("backward", m))
        if s > 0:
            ops.append(("send_backward", m))
        return ops

    for m in range(warm):
        prog += fwd(m)
    for i in range(mb - warm):
        m = warm + i
        prog += fwd(m, send=False)
        b = bwd(i)
        if s < pp - 1:  # receive the backward before sending the next forward: no blocking cycle
            prog += [b[0], ("send_forward", m), *b[1:]]
        else:
            prog += b
    for i in range(mb - warm, mb):
        prog += bwd(i)
    prog += [("all_reduce", None), ("optimizer", None)]
    return prog


def simulate(
    pp: int = 4,
    dp: int = 2,
    mb: int = 8,
    steps: int = 12,
    causes: list[SimCause] | None = None,
    seed: int = 0,
    jitter: float = 0.03,
    job: str = "job1",
    t0_s: float = 1_700_000_000.0,
    hosts: bool = False,
    tp: int = 1,
    tp_sync: bool = False,
    batched_p2p: bool = False,
) -> pl.DataFrame:
    """The step trace of the job (one row per op per rank).

    ``tp_sync``: tensor-parallel ranks wait for each other inside forward and backward (the layers'
    all-reduces), so a slow TP rank makes its TP peers' compute as long as its own. ``batched_p2p``:
    Megatron-LM's order, where a send and a recv are issued together (overlapping records).
    """
    causes = causes or []
    rng = np.random.default_rng(seed)
    n = pp * dp * tp

    def ident(r: int) -> tuple[int, int, int]:
        sd, t = divmod(r, tp)
        s, d = divmod(sd, dp)
        return s, d, t

    if batched_p2p:
        full = {r: _megatron_program(ident(r)[0], pp, mb) for r in range(n)}
    else:
        full = {r: [(op, m, False) for op, m in _program(ident(r)[0], pp, mb)] for r in range(n)}
    progs = {r: [(op, m) for op, m, _ in full[r]] for r in range(n)}
    joined = {r: [j for _, _, j in full[r]] for r in range(n)}
    # per-rank, per-step own durations drawn up front so that a cause never changes the random stream
    noise = {r: rng.lognormal(0.0, jitter, size=(steps, len(progs[r]))) for r in range(n)}
    di_pick = rng.integers(0, n, size=steps)
    own: dict[tuple[int, int, int], float] = {}
    gaps: dict[tuple[int, int, int], float] = defaultdict(float)
    for r in range(n):
        s = ident(r)[0]
        for k in range(steps):
            first_fwd = True
            for j, (op, _m) in enumerate(progs[r]):
                base = BASE_S["p2p"] if op.startswith(("send", "recv")) else BASE_S[op]
                d = base * noise[r][k, j]
                for c in causes:
                    if k < c.onset_step:
                        continue
                    if op in ("forward", "backward"):
                        if c.kind == "slow_worker" and r in c.ranks:
                            d *= c.factor
                        if c.kind == "stage" and s == c.stage:
                            d *= c.factor
                        if c.kind == "data_imbalance" and (
                            ident(r)[1] == c.turns[k] if c.turns else di_pick[k] == r
                        ):
                            d *= c.factor
                    if (
                        c.kind == "cpu_stall"
                        and r in c.ranks
                        and op == "forward"
                        and first_fwd
                        and k % c.every == 0
                    ):
                        gaps[(r, k, j)] += c.gap_s
                own[(r, k, j)] = d
                if op == "forward":
                    first_fwd = False
    link_factor = {(c.ranks[0], c.ranks[1]): c for c in causes if c.kind == "slow_link"}

    rows: list[dict] = []
    pos = {r: (0, 0) for r in range(n)}  # (step, op index)
    ready = {r: t0_s for r in range(n)}
    posted: dict[tuple, list[tuple[int, float, int, int]]] = defaultdict(list)
    done = 0
    total = sum(len(progs[r]) for r in range(n)) * steps

    def key_of(r: int, k: int, op: str, m: int | None) -> tuple:
        s, d, t = ident(r)
        if op in ("forward", "backward"):
            return ("tp", k, s, d, op, m)
        if op == "all_reduce":
            return ("ar", k, s, t)
        if op == "send_forward":
            return ("pf", k, s, d, t, m)
        if op == "recv_forward":
            return ("pf", k, s - 1, d, t, m)
        if op == "send_backward":
            return ("pb", k, s, d, t, m)
        return ("pb", k, s + 1, d, t, m)

    synced = ("send_forward", "recv_forward", "send_backward", "recv_backward", "all_reduce")
    if tp_sync and tp > 1:
        synced += ("forward", "backward")

    blocked = {r: False for r in range(n)}
    pending = {r: 0 for r in range(n)}
    batch_end = {r: 0.0 for r in range(n)}
    batch_len = {r: 1 for r in range(n)}

    def finish(mr: int, end: float) -> None:
        nonlocal done
        pending[mr] -= 1
        batch_end[mr] = max(batch_end[mr], end)
        done += 1
        if pending[mr] == 0:
            ready[mr] = batch_end[mr]
            for _ in range(batch_len[mr]):
                pos[mr] = _advance(pos[mr], len(progs[mr]))
            blocked[mr] = False

    while done < total:
        progressed = False
        for r in range(n):
            while not blocked[r]:
                k, j = pos[r]
                if k >= steps:
                    break
                size_b = 1
                while j + size_b < len(progs[r]) and joined[r][j + size_b]:
                    size_b += 1
                blocked[r], pending[r], batch_end[r], batch_len[r] = True, size_b, 0.0, size_b
                start = ready[r] + gaps[(r, k, j)]
                progressed = True
                for jj in range(j, j + size_b):
                    op, m = progs[r][jj]
                    if op not in synced:
                        d = own[(r, k, jj)]
                        rows.append(_row(job, r, ident(r), k, op, m, start, d, hosts))
                        finish(r, start + d)
                        continue
                    key = key_of(r, k, op, m)
                    posted[key].append((r, start, k, jj))
                    size = dp if op == "all_reduce" else tp if op in ("forward", "backward") else 2
                    if len(posted[key]) < size:
                        continue
                    members = posted.pop(key)
                    sync = max(p[1] for p in members)
                    if op in ("forward", "backward"):  # TP peers finish together, with the slowest
                        own_t = max(p[1] + own[(p[0], p[2], p[3])] for p in members) - sync
                    elif op == "all_reduce":
                        own_t = min(own[(p[0], p[2], p[3])] for p in members)
                        for c in causes:
                            if (
                                c.kind == "slow_coll"
                                and key[2:] == (c.stage, c.ranks[0])
                                and k >= c.onset_step
                            ):
                                own_t *= c.factor
                    else:
                        sender = next(p for p in members if progs[p[0]][p[3]][0].startswith("send"))
                        receiver = next(p for p in members if p is not sender)
                        own_t = own[(sender[0], sender[2], sender[3])]
                        link = link_factor.get((sender[0], receiver[0]))
                        if link is not None and sender[2] >= link.onset_step:
                            own_t *= link.factor
                    end = sync + own_t
                    for mr, mstart, mk, mj in members:
                        mop, mm = progs[mr][mj]
                        rows.append(_row(job, mr, ident(mr), mk, mop, mm, mstart, end - mstart, hosts))
                        finish(mr, end)
        if not progressed:
            raise RuntimeError(f"simulated program deadlocked with {done}/{total} ops done")
    return pl.DataFrame(rows).sort(["rank", "start_s"])


def _advance(p: tuple[int, int], length: int) -> tuple[int, int]:
    k, j = p
    return (k, j + 1) if j + 1 < length else (k + 1, 0)


def _row(
    job: str,
    r: int,
    where: tuple[int, int, int],
    k: int,
    op: str,
    m: int | None,
    start: float,
    d: float,
    hosts: bool,
) -> dict:
    s, dpr, tpr = where
    row = {
        "job": job,
        "rank": r,
        "dp_rank": dpr,
        "pp_stage": s,
        "tp_rank": tpr,
        "step": k,
        "op": op,
        "start_s": start,
        "duration_s": d,
        "microbatch": m,
    }
    if hosts:
        row["host"] = f"node{r // 8}"
        row["local_rank"] = r % 8
    return row


def step_times_s(trace: pl.DataFrame) -> np.ndarray:
    """Each step's time: from the end of the previous step (its last op) to its own end; the first from its start."""
    per = (
        trace.group_by("step")
        .agg(
            pl.col("start_s").min().alias("t0"), (pl.col("start_s") + pl.col("duration_s")).max().alias("t1")
        )
        .sort("step")
    )
    t0, t1 = per["t0"].to_numpy(), per["t1"].to_numpy()
    return np.r_[t1[0] - t0[0], np.diff(t1)]


def true_slowdown_frac(with_cause: pl.DataFrame, without: pl.DataFrame) -> float:
    """Median step time with the causes over median step time without them, minus one."""
    return float(np.median(step_times_s(with_cause)) / np.median(step_times_s(without)) - 1.0)
