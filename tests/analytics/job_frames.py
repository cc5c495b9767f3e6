"""Hand-built NCCL Inspector frames (default form: no start times) of a Megatron-style 3D-parallel job.

Layout as Megatron-LM's default order (tensor innermost, then data, then pipeline): global rank
g = t + tp * (d + dp * s) for tensor rank t, data-parallel rank d and pipeline stage s; node g // 8,
GPU g % 8 (8 GPUs per node). Communicators: one TP group per (s, d) (AllReduce, intra-node), one DP
group per (s, t) (ReduceScatter), one PP group per (d, t) (Send/Recv between adjacent stages, as
Inspector's ``p2p_perf`` records: ``p2p`` Send or Recv, peer, execution time). A collective ends for
every member when the last one arrives, so a member's execution time is the base time plus how long
it waited; a receive's execution time includes waiting for its sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

T0 = datetime(2026, 3, 1)
GPUS_PER_NODE = 8
BASE_US = 5_000.0  # a collective's own execution time
RECV_US = 500.0  # a receive whose data was already there


@dataclass(frozen=True)
class Job3D:
    """A job's shape and, optionally, one slow worker (stage, dp rank, tp rank) late by ``delay_s`` per step."""

    name: str = "jobA"
    tp: int = 8
    pp: int = 4
    dp: int = 4
    steps: int = 12
    period_s: float = 1.0
    microbatches: int = 4
    slow: tuple[int, int, int] | None = None
    delay_s: float = 0.2
    first_node: int = 0
    #: a slow pipeline link from (stage, dp rank, tp rank) to its next-stage peer, from step ``link_from``
    #: to step ``link_until`` (exclusive): both ends' transfers take ``delay_s`` per step longer.
    slow_link: tuple[int, int, int] | None = None
    link_from: int = 0
    link_until: int | None = None

    def rank(self, s: int, d: int, t: int) -> int:
        """Global rank of (stage, dp rank, tp rank)."""
        return t + self.tp * (d + self.dp * s)

    def host(self, g: int) -> str:
        """Host of global rank ``g``."""
        return f"{self.name}-node{self.first_node + g // GPUS_PER_NODE}"

    def gpu(self, g: int) -> str:
        """GPU component of global rank ``g``: "host/gpuN"."""
        return f"{self.host(g)}/gpu{g % GPUS_PER_NODE}"

    def tp_comm(self, s: int, d: int) -> str:
        return f"{self.name}-tp-s{s}-d{d}"

    def dp_comm(self, s: int, t: int) -> str:
        return f"{self.name}-dp-s{s}-t{t}"

    def pp_comm(self, d: int, t: int) -> str:
        return f"{self.name}-pp-d{d}-t{t}"


def _jitter_s(g: int, k: int) -> float:
    """Deterministic arrival noise of up to 1 ms."""
    return 1e-4 * ((g * 7 + k * 13) % 11)


def _row(job: Job3D, ts, comm, rank, n, g, kind, coll, sn, exec_us, peer=None) -> dict:
    return {
        "ts": ts,
        "job": job.name,
        "comm_id": comm,
        "rank": rank,
        "n_ranks": n,
        "kind": kind,
        "coll": coll,
        "coll_sn": sn,
        "peer": peer,
        "exec_time_us": exec_us,
        "start_ts": None,
        "hostname": job.host(g),
        "pid": 10_000 + g,
    }


def _group(
    job: Job3D, ts, comm, members: list[int], arrival: dict[int, float], coll: str, sn: int
) -> list[dict]:
    """One collective: every member's execution time is the base plus its wait for the last to arrive."""
    last = max(arrival[g] for g in members)
    return [
        _row(job, ts, comm, i, len(members), g, "coll", coll, sn, BASE_US + (last - arrival[g]) * 1e6)
        for i, g in enumerate(members)
    ]


def _link_ends(job: Job3D, k: int) -> tuple[int, int] | None:
    """The global ranks at the ends of ``job``'s slow pipeline link while it is slow at step ``k``."""
    if job.slow_link is None or k < job.link_from or (job.link_until is not None and k >= job.link_until):
        return None
    s, d, t = job.slow_link
    return job.rank(s, d, t), job.rank(s + 1, d, t)


def job_frame(job: Job3D, *, tp_records: bool = True, steps: range | None = None) -> pl.DataFrame:
    """nccl_collectives rows of ``job`` over its steps (``steps``: a subset, e.g. until a hang).

    A slow worker is late at its TP collectives and its replica at every DP collective; receivers of
    its replica wait on their senders (long Recv, short Send), except the slow worker's own. A slow
    link makes both its ends late at their TP collectives, its replica late at DP, and both ends of
    every transfer over it long; the replica's other receivers wait as for a slow worker."""
    rows: list[dict] = []
    s0, d0, t0 = job.slow if job.slow else (-1, -1, -1)
    for k in steps if steps is not None else range(job.steps):
        at = T0 + timedelta(seconds=k * job.period_s)
        ranks = [job.rank(s, d, t) for s in range(job.pp) for d in range(job.dp) for t in range(job.tp)]
        own = {g: _jitter_s(g, k) for g in ranks}  # arrival at its TP collective
        if job.slow:
            own[job.rank(s0, d0, t0)] += job.delay_s
        ends = _link_ends(job, k)
        link_d = job.slow_link[1] if ends else -1
        for g in ends or ():
            own[g] += job.delay_s
        # TP: the group waits for its last member; then the whole replica is late by what the slow one cost
        late_d = {d0, link_d} if job.slow else {link_d}
        replica_late = {d: (job.delay_s if d in late_d else 0.0) for d in range(job.dp)}
        for s in range(job.pp):
            for d in range(job.dp):
                members = [job.rank(s, d, t) for t in range(job.tp)]
                if tp_records and job.tp > 1:
                    for i in range(2):
                        rows += _group(
                            job,
                            at + timedelta(seconds=0.2 + 0.1 * i),
                            job.tp_comm(s, d),
                            members,
                            own,
                            "AllReduce",
                            2 * k + i,
                        )
        for s in range(job.pp):
            for t in range(job.tp):
                members = [job.rank(s, d, t) for d in range(job.dp)]
                arrival = {g: _jitter_s(g, k + 1) + replica_late[d] for d, g in enumerate(members)}
                rows += _group(
                    job, at + timedelta(seconds=0.8), job.dp_comm(s, t), members, arrival, "ReduceScatter", k
                )
        for d in range(job.dp):
            for t in range(job.tp):
                for m in range(job.microbatches):
                    sn = k * job.microbatches + m
                    for s in range(job.pp - 1):
                        a, b = job.rank(s, d, t), job.rank(s + 1, d, t)
                        ts = at + timedelta(seconds=0.4 + 0.05 * m)
                        # forward s -> s + 1, backward s + 1 -> s; a receiver in the slow replica waits
                        # on the slow stage unless it is the slow stage itself
                        for src, dst, sr, dr in ((a, b, s, s + 1), (b, a, s + 1, s)):
                            waits = (job.slow is not None and d == d0 and dr != s0) or (
                                d == link_d and (a, b) != ends
                            )
                            recv_us = RECV_US + (job.delay_s / job.microbatches * 1e6 if waits else 0.0)
                            send_us = RECV_US
                            if ends and (a, b) == ends:  # the slow link: both ends of every transfer
                                send_us = recv_us = RECV_US + job.delay_s / (2 * job.microbatches) * 1e6
                            comm = job.pp_comm(d, t)
                            rows.append(_row(job, ts, comm, sr, job.pp, src, "p2p", "Send", sn, send_us, dr))
                            rows.append(_row(job, ts, comm, dr, job.pp, dst, "p2p", "Recv", sn, recv_us, sr))
    return pl.DataFrame(rows, schema_overrides={"start_ts": pl.Datetime("us"), "peer": pl.Int64})


def identity_frame(job: Job3D) -> pl.DataFrame:
    """The rank_identity view of ``job``: every (communicator, rank) placed on its node and GPU by bus id."""
    rows = []
    for s in range(job.pp):
        for d in range(job.dp):
            for t in range(job.tp):
                g = job.rank(s, d, t)
                place = (job.host(g), g % GPUS_PER_NODE, "bus_id")
                rows.append((job.name, job.tp_comm(s, d), t, job.tp, *place))
                rows.append((job.name, job.dp_comm(s, t), d, job.dp, *place))
                rows.append((job.name, job.pp_comm(d, t), s, job.pp, *place))
    return pl.DataFrame(
        rows,
        schema={
            "job": pl.String,
            "comm_id": pl.String,
            "rank": pl.Int32,
            "n_ranks": pl.Int32,
            "node": pl.String,
            "gpu_index": pl.Int32,
            "gpu_from": pl.String,
        },
        orient="row",
    )
