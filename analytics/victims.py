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
from c4.analytics.periods import job_periods
from c4.analytics.rank_gpu import RankPlaces

#: A victim's receives wait at least this many times as long as the cause's ...
WAIT_RATIO = 2.0
#: ... and at least this much longer (microseconds): a receive kernel's own transfer time is noise below it.
MIN_WAIT_US = 1000.0
#: Communicator roles whose members run in lock-step inside one model replica.
REPLICA_ROLES = ("TP", "PP")


def _procs(
    colls: pl.DataFrame, places: RankPlaces
) -> tuple[dict[tuple[str, str, int], str], dict[str, tuple[str, str, int, str | None]]]:
    """(job, comm_id, rank) -> its process ("host:pid" as Inspector wrote it, else its GPU), and each
    process -> one (job, comm_id, rank, host) it was seen as."""
    c = colls if "pid" in colls.columns else colls.with_columns(pl.lit(None, dtype=pl.Int64).alias("pid"))
    out: dict[tuple[str, str, int], str] = {}
    seen: dict[str, tuple[str, str, int, str | None]] = {}
    for job, comm, rank, host, pid in (
        c.select(["job", "comm_id", "rank", "hostname", "pid"]).unique(["job", "comm_id", "rank"]).rows()
    ):
        if host and pid is not None:
            proc = f"{host}:{pid}"
        else:
            where = places.of(comm, rank, host or None)
            proc = where.component if where else f"{job}/{comm}/rank{rank}"
        out[(job, comm, rank)] = proc
        seen.setdefault(proc, (job, comm, rank, host or None))
    return out, seen


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


def _receives(
    colls: pl.DataFrame, procs: dict[tuple[str, str, int], str]
) -> list[tuple[str, str, str | None, float]]:
    """Every p2p receive with an execution time: (job, receiving process, sending process, microseconds)."""
    if "exec_time_us" not in colls.columns:
        return []
    c = colls if "peer" in colls.columns else colls.with_columns(pl.lit(None, dtype=pl.Int64).alias("peer"))
    recv = c.filter((pl.col("kind") == "p2p") & (pl.col("coll").str.to_lowercase() == "recv")).drop_nulls(
        "exec_time_us"
    )
    out = []
    for job, comm, rank, peer, us in recv.select(["job", "comm_id", "rank", "peer", "exec_time_us"]).rows():
        proc = procs.get((job, comm, rank))
        if proc is not None:
            out.append((job, proc, procs.get((job, comm, peer)) if peer is not None else None, float(us)))
    return out


def _median(values: list[float]) -> float:
    return float(pl.Series(values, dtype=pl.Float64).median())


def _recv_waits_us(
    receives: list[tuple[str, str, str | None, float]],
) -> tuple[dict[str, float], dict[str, float]]:
    """Per process, the median execution time of its p2p receives (microseconds), and per job the
    median of those: a receive that waits on nobody."""
    per: dict[str, list[float]] = {}
    job_of: dict[str, str] = {}
    for job, proc, _, us in receives:
        per.setdefault(proc, []).append(us)
        job_of[proc] = job
    waits = {p: _median(v) for p, v in per.items()}
    by_job: dict[str, list[float]] = {}
    for p, w in waits.items():
        by_job.setdefault(job_of[p], []).append(w)
    return waits, {j: _median(v) for j, v in by_job.items()}


def _long(us: float, typical: float) -> bool:
    """A receive (or a process's median one) that waited on its sender, against the job's typical one."""
    return us >= max(WAIT_RATIO * typical, typical + MIN_WAIT_US)


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
    group: list[Finding],
    role_of: dict[tuple[str, str], str],
    proc_of,
    waits: dict[str, float],
    typical: float | None,
) -> tuple[list[Finding], list[Finding]]:
    """(causes, victims) among the stragglers of one model replica; no cause when every one of them
    waits on its receives (the replica waits on a rank none of its collectives showed late)."""
    in_tp = [f for f in group if any(role_of.get((f.job, c)) == "TP" for c in _comms_of(f))]
    if in_tp:
        return in_tp, [f for f in group if f not in in_tp]
    known = [f for f in group if waits.get(proc_of(f)) is not None]
    if not known:
        return group, []  # no receive times: nothing tells cause from victim
    cause = min(known, key=lambda f: waits[proc_of(f)])
    least = waits[proc_of(cause)]
    if typical is not None and _long(least, typical) and len(known) == len(group):
        return [], group
    victims = [
        f
        for f in known
        if f is not cause and waits[proc_of(f)] >= max(WAIT_RATIO * least, least + MIN_WAIT_US)
    ]
    return [f for f in group if f not in victims], victims


def _upstream(
    job: str,
    members: set[str],
    receives: list[tuple[str, str, str | None, float]],
    waits: dict[str, float],
    typical: float,
) -> tuple[str, int] | None:
    """The process of a replica its long receives wait on, whose own receives do not wait: (process,
    long receives from it); None when there is none."""
    waited_on: dict[str, int] = {}
    for j, proc, sender, us in receives:
        if j == job and proc in members and sender in members and _long(us, typical):
            waited_on[sender] = waited_on.get(sender, 0) + 1
    fresh = {p: n for p, n in waited_on.items() if not _long(waits.get(p, 0.0), typical)}
    if not fresh:
        return None
    best = max(sorted(fresh), key=fresh.get)
    return best, fresh[best]


def _upstream_finding(
    victims: list[Finding],
    proc: str,
    n: int,
    seen,
    places: RankPlaces,
    waits: dict[str, float],
    typical: float,
) -> Finding:
    """A straggler finding for the process its replica's long receives wait on."""
    job, comm, rank, host = seen[proc]
    where = places.of(comm, rank, host)
    comp, node = (where.component, where.node) if where else (proc, host or "")
    return Finding(
        "straggler",
        "non_comm_slow",
        "gpu",
        comp,
        node,
        min((v.first_seen for v in victims if v.first_seen), default=None),
        max((v.last_seen for v in victims if v.last_seen), default=None),
        min(v.confidence for v in victims),
        "drain_node",
        f"rank {rank} of {comm} ({comp}) is what its pipeline waits on: {n} long receives from it while its "
        f"own receives wait on nobody; {len(victims)} ranks of its pipeline arrived late only because of it",
        {
            "comm": comm,
            "rank": rank,
            "signal": "p2p_recv",
            "waited_on_by_receives": n,
            "recv_wait_us": waits.get(proc),
            "typical_recv_wait_us": typical,
            **(where.evidence if where else {"gpu_from": "unknown: no host or identity"}),
        },
        f"SELECT ts, rank, peer, coll, exec_time_us FROM nccl_collectives WHERE comm_id = '{comm}' AND kind = 'p2p' "
        f"ORDER BY ts",
        job=job,
        communicator=comm,
        affected=sorted({v.component for v in victims}),
    )


def _cost(
    f: Finding, victims: list[Finding], role_of: dict[tuple[str, str], str], period_s: float | None
) -> None:
    """Set ``f.slowdown_frac`` from how late its replica arrived at its data-parallel collectives: every
    other replica waits that long each iteration, so the step takes period instead of period - late."""
    late = [
        float(x.evidence["late_s"])
        for x in [f, *victims]
        if "late_s" in x.evidence
        and role_of.get((x.job, x.evidence.get("comm", x.communicator))) in ("DP", "WORLD")
    ]
    if late and period_s and period_s > max(late):
        f.slowdown_frac = max(late) / (period_s - max(late))
        f.evidence["slowdown_from"] = "late_s at data-parallel collectives over the iteration period"


def without_victims(
    found: list[Finding], colls: pl.DataFrame, places: RankPlaces | None = None
) -> list[Finding]:
    """Straggler findings with pipeline victims taken out: each cause lists them in ``affected``; when
    every late rank of a replica only waited, the rank its receives wait on is blamed instead."""
    if not found:
        return found
    found = _merge_same_gpu(found)
    if len(found) < 2 and ("kind" not in colls.columns or not (colls["kind"] == "p2p").any()):
        return (
            found  # one late rank and no receive to say it waited: it stands (and costs no pass over colls)
        )
    places = places or RankPlaces()
    c = with_job(colls)
    roles = communicator_roles(c, places)
    role_of = {(j, comm): r for j, comm, r in roles.select(["job", "comm_id", "role"]).rows()}
    procs, seen = _procs(c, places)
    replica = _replicas(procs, role_of)
    receives = _receives(c, procs)
    waits, typical = _recv_waits_us(receives)
    periods = job_periods(c)

    def proc_of(f: Finding) -> str:
        p = procs.get((f.job, f.evidence.get("comm", f.communicator), f.evidence.get("rank", -1)))
        return p or f.component

    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in found:
        groups.setdefault((f.job, replica.get(proc_of(f), proc_of(f))), []).append(f)
    out = []
    for (job, rep), group in groups.items():
        causes, victims = _split(group, role_of, proc_of, waits, typical.get(job))
        if not causes:  # every late rank waited: name what they waited on, if the receives say
            members = {p for p, r in replica.items() if r == rep}
            up = _upstream(job, members, receives, waits, typical[job])
            if up is not None:
                out.append(_upstream_finding(victims, *up, seen, places, waits, typical[job]))
                _cost(out[-1], victims, role_of, periods.get(job))
            continue
        for f in causes:
            _cost(f, victims, role_of, periods.get(job))
            if victims:
                f.affected = sorted({*f.affected, *(v.component for v in victims)})
                f.evidence["victims"] = ",".join(f.affected)
                f.evidence["recv_wait_us"] = waits.get(proc_of(f))
                f.summary += f"; {len(victims)} ranks of its pipeline only waited on it"
        out += causes
    return out
