"""Never blame a pipeline victim: of the stragglers one model replica shows, keep the cause and list the
ranks that only waited on it.

In pipeline-parallel training a slow worker delays its whole data-parallel replica: the next stages wait
for its activations, the previous ones for its gradients, its tensor-parallel peers for its share of every
collective. So the same replica arrives last in every stage's data-parallel collective, and a
per-communicator straggler detector names one rank per stage. Two signals tell the cause apart:

- a straggler inside a tensor-parallel group (one node's GPUs, in lock-step) is slow itself: pipeline
  waits delay a TP group as a whole, never one member of it;
- NCCL Inspector's ``p2p_perf`` records (Recv, with ``p2p_exec_time_us``: the receive kernel's time,
  waiting for the sender included) show who waits: a victim's receives from the slow stage are long,
  the slow worker's own receives are not (its neighbours had long finished when it asked).

A replica is the set of processes joined by tensor- and pipeline-parallel communicators (a process is
its host and pid, as Inspector records it: a process drives one GPU).
"""

from __future__ import annotations

import polars as pl

from c4.analytics.communicators import communicator_roles, with_job
from c4.analytics.findings import Finding
from c4.analytics.rank_gpu import RankPlaces

#: A victim's receives wait at least this many times as long as the cause's ...
WAIT_RATIO = 2.0
#: ... and at least this much longer (microseconds): a receive kernel's own transfer time is noise below it.
MIN_WAIT_US = 1000.0
#: Communicator roles whose members run in lock-step inside one model replica.
REPLICA_ROLES = ("TP", "PP")


def _procs(colls: pl.DataFrame, places: RankPlaces) -> dict[tuple[str, str, int], str]:
    """(job, comm_id, rank) -> its process: "host:pid" as Inspector wrote it, else its GPU."""
    c = colls if "pid" in colls.columns else colls.with_columns(pl.lit(None, dtype=pl.Int64).alias("pid"))
    out = {}
    for job, comm, rank, host, pid in (
        c.select(["job", "comm_id", "rank", "hostname", "pid"]).unique(["job", "comm_id", "rank"]).rows()
    ):
        if host and pid is not None:
            out[(job, comm, rank)] = f"{host}:{pid}"
        else:
            where = places.of(comm, rank, host or None)
            out[(job, comm, rank)] = where.component if where else f"{job}/{comm}/rank{rank}"
    return out


def _replicas(procs: dict[tuple[str, str, int], str], role_of: dict[tuple[str, str], str]) -> dict[str, str]:
    """Process -> a representative of its model replica (union of its TP and PP communicators' members)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    members: dict[tuple[str, str], list[str]] = {}
    for (job, comm, _), proc in procs.items():
        find(proc)
        if role_of.get((job, comm)) in REPLICA_ROLES:
            members.setdefault((job, comm), []).append(proc)
    for group in members.values():
        for p in group[1:]:
            parent[find(p)] = find(group[0])
    return {p: find(p) for p in parent}


def _recv_waits_us(colls: pl.DataFrame, procs: dict[tuple[str, str, int], str]) -> dict[str, float]:
    """Per process, the median execution time of its p2p receives (microseconds), where it has any."""
    if "exec_time_us" not in colls.columns:
        return {}
    recv = colls.filter((pl.col("kind") == "p2p") & (pl.col("coll").str.to_lowercase() == "recv")).drop_nulls(
        "exec_time_us"
    )
    waits: dict[str, list[float]] = {}
    for job, comm, rank, us in recv.select(["job", "comm_id", "rank", "exec_time_us"]).rows():
        proc = procs.get((job, comm, rank))
        if proc is not None:
            waits.setdefault(proc, []).append(float(us))
    return {p: float(pl.Series(v).median()) for p, v in waits.items()}


def _merge_same_gpu(found: list[Finding]) -> list[Finding]:
    """One finding per (job, GPU): the one late in the most collectives, naming every communicator it was late in."""
    best: dict[tuple[str, str], Finding] = {}
    comms: dict[tuple[str, str], set[str]] = {}
    for f in found:
        key = (f.job, f.component)
        comms.setdefault(key, set()).add(f.communicator)
        if key not in best or f.evidence.get("collectives_last", 0) > best[key].evidence.get(
            "collectives_last", 0
        ):
            best[key] = f
    for key, f in best.items():
        if len(comms[key]) > 1:
            f.evidence["comms"] = ",".join(sorted(comms[key]))
    return list(best.values())


def _comms_of(f: Finding) -> list[str]:
    """The communicators a (merged) straggler finding was late in."""
    return (f.evidence.get("comms") or f.communicator).split(",")


def _split(
    group: list[Finding], role_of: dict[tuple[str, str], str], proc_of, waits: dict[str, float]
) -> tuple[list[Finding], list[Finding]]:
    """(causes, victims) among the stragglers of one model replica."""
    in_tp = [f for f in group if any(role_of.get((f.job, c)) == "TP" for c in _comms_of(f))]
    if in_tp:
        return in_tp, [f for f in group if f not in in_tp]
    known = [f for f in group if waits.get(proc_of(f)) is not None]
    if not known:
        return group, []  # no receive times: nothing tells cause from victim
    cause = min(known, key=lambda f: waits[proc_of(f)])
    least = waits[proc_of(cause)]
    victims = [
        f
        for f in known
        if f is not cause and waits[proc_of(f)] >= max(WAIT_RATIO * least, least + MIN_WAIT_US)
    ]
    return [f for f in group if f not in victims], victims


def without_victims(
    found: list[Finding], colls: pl.DataFrame, places: RankPlaces | None = None
) -> list[Finding]:
    """Straggler findings with pipeline victims taken out: each cause lists them in ``affected``."""
    if len(found) < 2:
        return found
    places = places or RankPlaces()
    found = _merge_same_gpu(found)
    c = with_job(colls)
    roles = communicator_roles(c, places)
    role_of = {(j, comm): r for j, comm, r in roles.select(["job", "comm_id", "role"]).rows()}
    procs = _procs(c, places)
    replica = _replicas(procs, role_of)
    waits = _recv_waits_us(c, procs)

    def proc_of(f: Finding) -> str:
        p = procs.get((f.job, f.evidence.get("comm", f.communicator), f.evidence.get("rank", -1)))
        return p or f.component

    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in found:
        groups.setdefault((f.job, replica.get(proc_of(f), proc_of(f))), []).append(f)
    out = []
    for group in groups.values():
        causes, victims = _split(group, role_of, proc_of, waits) if len(group) > 1 else (group, [])
        for f in causes:
            if victims:
                f.affected = sorted({*f.affected, *(v.component for v in victims)})
                f.evidence["victims"] = ",".join(f.affected)
                f.evidence["recv_wait_us"] = waits.get(proc_of(f))
                f.summary += f"; {len(victims)} ranks of its pipeline only waited on it"
        out += causes
    return out
