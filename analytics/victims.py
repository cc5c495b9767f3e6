"""Never blame a pipeline victim: of the stragglers one model replica shows, keep the cause and list the
ranks that only waited on it.

In pipeline-parallel training a slow worker delays its whole data-parallel replica: the next stages wait
for its activations, the previous ones for its gradients, its tensor-parallel peers for its share of every
collective. So the same replica arrives last in every stage's data-parallel collective, and a
per-communicator straggler detector names one rank per stage. Three signals tell the cause apart:

- a straggler inside a tensor-parallel group (one node's GPUs, in lock-step) is slow itself: pipeline
  waits delay a TP group as a whole, never one member of it;
- NCCL Inspector's ``p2p_perf`` records (Recv, with ``p2p_exec_time_us``: the receive kernel's time,
  waiting for the sender included) show who waits: a victim's receives take far longer on average than
  those of its same-stage peers (the other members of the data-parallel group it was late in), the
  slow worker's do not (its neighbours had long finished when it asked);
- of tensor-parallel peers still standing, the one that waits least in their TP group arrived last.

When every late rank only waited, the senders their receives spent most time on are followed upstream
to the rank that does not wait: that one is blamed (``signal`` "p2p_recv"). On B's 1F1B twin
(sim/pipeline.py of branch h18-twin, one worker 2.3x slower; tp x pp x dp = 1x4x4, 8x4x4, 2x4x8,
8x2x2 with TP records) this blames only the cause, and where it states a slowdown it is within 0.01 of the
true one.

A replica is the set of processes joined by tensor- and pipeline-parallel communicators (a process is
its host and pid, as Inspector records it: a process drives one GPU).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import polars as pl

from c4.analytics.communicators import communicator_roles
from c4.analytics.findings import Finding
from c4.analytics.jobs import with_job
from c4.analytics.periods import job_periods
from c4.analytics.rank_gpu import RankPlaces

#: A process whose receives wait this many times as long as its same-stage peers' (the other members of
#: the data-parallel communicator it was late in) waited on its pipeline: a victim. B's 1F1B twin
#: (tp=1 pp=4 dp=4, one worker 2.3x slower) gives victims 2.3-2.9x their peers and the cause 0.6x.
VICTIM_EXCESS = 1.5
#: ... and at least this much longer (microseconds): a receive kernel's own transfer time is noise below it.
MIN_WAIT_US = 1000.0
#: Communicator roles whose members run in lock-step inside one model replica.
REPLICA_ROLES = ("TP", "PP")
#: How many senders to follow upstream from a victim to the rank its pipeline waits on.
MAX_HOPS = 16


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


@dataclass
class _Evidence:
    """What the job's records say about its processes: communicators, roles, replicas, waits."""

    procs: dict[tuple[str, str, int], str]  # (job, comm, rank) -> process
    seen: dict[str, tuple[str, str, int, str | None]]  # process -> one (job, comm, rank, host)
    role_of: dict[tuple[str, str], str]  # (job, comm) -> role
    members: dict[tuple[str, str], set[str]]  # (job, comm) -> processes
    replica: dict[str, str]  # process -> representative of its replica
    wait_us: dict[str, float]  # process -> mean execution time of its receives
    from_us: dict[str, dict[str, float]]  # process -> sender -> total receive time from it
    tp_us: dict[tuple[str, str], float]  # (TP comm, process) -> mean collective execution time
    periods: dict[str, float]  # job -> iteration period

    def excess(self, proc: str, comm: tuple[str, str]) -> float | None:
        """How many times as long ``proc``'s receives wait as its peers' in ``comm`` (None if unknown)."""
        mine = self.wait_us.get(proc)
        peers = [self.wait_us[q] for q in self.members.get(comm, ()) if q != proc and q in self.wait_us]
        if mine is None or not peers:
            return None
        base = _median(peers)
        if mine - base < MIN_WAIT_US:
            return min(1.0, mine / base) if base > 0 else 1.0
        return mine / base if base > 0 else math.inf


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


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


def _receive_times(colls: pl.DataFrame, procs) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Per process, the mean execution time of its p2p receives (waiting for the sender included), and
    the total time it spent receiving from each sender (microseconds)."""
    if "exec_time_us" not in colls.columns:
        return {}, {}
    c = colls if "peer" in colls.columns else colls.with_columns(pl.lit(None, dtype=pl.Int64).alias("peer"))
    recv = (
        c.filter((pl.col("kind") == "p2p") & (pl.col("coll").str.to_lowercase() == "recv"))
        .drop_nulls("exec_time_us")
        .group_by(["job", "comm_id", "rank", "peer"])
        .agg(pl.col("exec_time_us").sum().alias("us"), pl.len().alias("n"))
    )
    total: dict[str, list[float]] = {}
    from_us: dict[str, dict[str, float]] = {}
    for job, comm, rank, peer, us, n in recv.rows():
        proc = procs.get((job, comm, rank))
        if proc is None:
            continue
        t = total.setdefault(proc, [0.0, 0])
        t[0], t[1] = t[0] + us, t[1] + n
        sender = procs.get((job, comm, peer)) if peer is not None else None
        if sender is not None:
            from_us.setdefault(proc, {})[sender] = from_us.get(proc, {}).get(sender, 0.0) + us
    return {p: us / n for p, (us, n) in total.items() if n}, from_us


def _tp_times(colls: pl.DataFrame, procs, role_of) -> dict[tuple[str, str], float]:
    """(TP communicator, process) -> its mean collective execution time there (the latecomer waits least)."""
    tp = [comm for (_, comm), role in role_of.items() if role == "TP"]
    if not tp or "exec_time_us" not in colls.columns:
        return {}
    means = (
        colls.filter(pl.col("comm_id").is_in(tp) & (pl.col("kind") == "coll"))
        .drop_nulls("exec_time_us")
        .group_by(["job", "comm_id", "rank"])
        .agg(pl.col("exec_time_us").mean())
    )
    return {
        (comm, procs[(job, comm, rank)]): us
        for job, comm, rank, us in means.rows()
        if (job, comm, rank) in procs
    }


def _evidence(colls: pl.DataFrame, places: RankPlaces) -> _Evidence:
    """Everything the victim rules read, from one window of nccl_collectives."""
    roles = communicator_roles(colls, places)
    role_of = {(j, comm): r for j, comm, r in roles.select(["job", "comm_id", "role"]).rows()}
    procs, seen = _procs(colls, places)
    members: dict[tuple[str, str], set[str]] = {}
    for (job, comm, _), proc in procs.items():
        members.setdefault((job, comm), set()).add(proc)
    wait_us, from_us = _receive_times(colls, procs)
    return _Evidence(
        procs,
        seen,
        role_of,
        members,
        _replicas(procs, role_of),
        wait_us,
        from_us,
        _tp_times(colls, procs, role_of),
        job_periods(colls),
    )


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


def _latecomers(procs: list[str], ev: _Evidence, job: str) -> set[str]:
    """Of processes that share a TP group, the one that waits least in it (it arrives last: the others
    wait for it); processes in no shared TP group all stay."""
    keep = set(procs)
    for (j, comm), role in ev.role_of.items():
        if j != job or role != "TP":
            continue
        inside = [p for p in procs if (comm, p) in ev.tp_us]
        if len(inside) < 2:
            continue
        low = min(ev.tp_us[(comm, p)] for p in inside)
        keep -= {p for p in inside if ev.tp_us[(comm, p)] >= max(VICTIM_EXCESS * low, low + MIN_WAIT_US)}
    return keep


def _split(group: list[Finding], ev: _Evidence, proc_of) -> tuple[list[Finding], list[Finding]]:
    """(causes, victims) among the stragglers of one model replica: late inside a TP group is a cause;
    else receives that wait far longer than the same stage's peers' make a victim; of TP peers left,
    the one its TP group waits for. No cause when every one of them waited."""
    in_tp = [f for f in group if any(ev.role_of.get((f.job, c)) == "TP" for c in _comms_of(f))]
    if in_tp:
        return in_tp, [f for f in group if f not in in_tp]
    victims = []
    for f in group:
        x = ev.excess(proc_of(f), (f.job, f.evidence.get("comm", f.communicator)))
        if x is not None and x >= VICTIM_EXCESS:
            victims.append(f)
    causes = [f for f in group if f not in victims]
    if len(causes) > 1:
        keep = _latecomers([proc_of(f) for f in causes], ev, group[0].job)
        victims += [f for f in causes if proc_of(f) not in keep]
        causes = [f for f in causes if proc_of(f) in keep]
    return causes, victims


def _upstream(victims: list[Finding], ev: _Evidence, proc_of) -> tuple[str, int] | None:
    """The process the victims' receives lead to: from each victim, follow the sender it spent most time
    receiving from while that sender waits too; where the chain ends at one that does not wait is a
    cause. Returns (process, victims leading to it), the most named after the TP tie-break; None if none."""
    votes: dict[str, int] = {}
    for v in victims:
        p, comm, seen = proc_of(v), (v.job, v.evidence.get("comm", v.communicator)), set()
        for _ in range(MAX_HOPS):
            seen.add(p)
            senders = ev.from_us.get(p)
            if not senders:
                break
            nxt = max(sorted(senders), key=senders.get)
            if nxt in seen:
                break
            stage_comm = next(
                (
                    k
                    for k in ev.members
                    if k[0] == v.job and ev.role_of.get(k) in ("DP", "WORLD") and nxt in ev.members[k]
                ),
                comm,
            )
            x = ev.excess(nxt, stage_comm)
            p = nxt
            if x is None or x < VICTIM_EXCESS:
                votes[p] = votes.get(p, 0) + 1
                break
    if not votes:
        return None
    keep = _latecomers(sorted(votes), ev, victims[0].job)
    best = max(sorted(keep), key=votes.get, default=None)
    return (best, votes[best]) if best is not None else None


def _upstream_finding(
    victims: list[Finding],
    proc: str,
    n: int,
    seen,
    places: RankPlaces,
    waits: dict[str, float],
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
        f"rank {rank} of {comm} ({comp}) is what its pipeline waits on: the receives of {n} late ranks lead to "
        f"it while its own do not wait; {len(victims)} ranks of its pipeline arrived late only because of it",
        {
            "comm": comm,
            "rank": rank,
            "signal": "p2p_recv",
            "waited_on_by_receives": n,
            "recv_wait_us": waits.get(proc),
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


def _component(proc: str, ev: _Evidence, places: RankPlaces) -> str:
    """A process as findings name it: its GPU where the identity view or its host place it."""
    job, comm, rank, host = ev.seen[proc]
    where = places.of(comm, rank, host)
    return where.component if where else proc


def _link_replicas(
    links: list[Finding], ev: _Evidence, places: RankPlaces
) -> dict[tuple[str, str], list[Finding]]:
    """(job, replica) -> the slow pipeline links inside it; each link lists the rest of its replica (its
    ends' tensor-parallel peers, the other stages) as affected: they wait on it together."""
    out: dict[tuple[str, str], list[Finding]] = {}
    for link in links:
        ends = {ev.procs.get((link.job, link.communicator, r)) for r in link.evidence.get("ranks", [])} - {
            None
        }
        reps = {ev.replica.get(p, p) for p in ends}
        for rep in reps:
            out.setdefault((link.job, rep), []).append(link)
        others = {
            _component(p, ev, places)
            for p, rep in ev.replica.items()
            if rep in reps and p not in ends and p in ev.seen
        }
        link.affected = sorted({*link.affected, *others} - set(link.component.split("->")))
        link.evidence["ends"] = sorted(ends)
    return out


def _beside_links(group: list[Finding], links: list[Finding], ev: _Evidence, proc_of) -> list[Finding]:
    """Stragglers of a replica with a slow pipeline link: the link's ends are late because of it, and so
    is every rank that waits on them (their TP peers arrive late together, later stages wait on their
    receives); only a rank late inside its own TP group that is not an end of the link is a cause of its
    own. The others become the link's ``affected``, and its cost is their lateness at the data-parallel
    collectives where those show it (else the link's own excess time per iteration stands)."""
    ends = {p for link in links for p in link.evidence.get("ends", [])}
    causes = [
        f
        for f in group
        if proc_of(f) not in ends and any(ev.role_of.get((f.job, c)) == "TP" for c in _comms_of(f))
    ]
    waited = [f for f in group if f not in causes]
    for link in links:
        link.affected = sorted(
            {*link.affected, *(v.component for v in waited)} - set(link.component.split("->"))
        )
        link.evidence["stragglers_explained"] = len(waited)
        _cost(
            link, waited, ev.role_of, ev.periods.get(link.job)
        )  # their lateness, where DP collectives show it
    return causes


def without_victims(
    found: list[Finding],
    colls: pl.DataFrame,
    places: RankPlaces | None = None,
    links: list[Finding] | None = None,
) -> list[Finding]:
    """Straggler findings with pipeline victims taken out: each cause lists them in ``affected``; when
    every late rank of a replica only waited, the rank their receives lead to is blamed instead.

    ``links``: slow pipeline links (analytics/p2p_links.py) of the same window; a straggler its replica's
    slow link explains is listed in the link's ``affected`` instead (and the link gets its replica's other
    ranks there, and the cost of their lateness)."""
    links = links or []
    if not found and not links:
        return found
    found = _merge_same_gpu(found)
    if not links and len(found) < 2 and ("kind" not in colls.columns or not (colls["kind"] == "p2p").any()):
        return found  # one late rank and no receive to say it waited: it stands (no pass over colls)
    places = places or RankPlaces()
    ev = _evidence(with_job(colls), places)
    beside = _link_replicas(links, ev, places)

    def proc_of(f: Finding) -> str:
        p = ev.procs.get((f.job, f.evidence.get("comm", f.communicator), f.evidence.get("rank", -1)))
        return p or f.component

    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in found:
        groups.setdefault((f.job, ev.replica.get(proc_of(f), proc_of(f))), []).append(f)
    out = []
    for (job, rep), group in groups.items():
        if (job, rep) in beside:
            out += _beside_links(group, beside[(job, rep)], ev, proc_of)
            continue
        causes, victims = _split(group, ev, proc_of)
        if not causes:  # every late rank waited: name what their receives lead to, if they say
            up = _upstream(victims, ev, proc_of)
            if up is not None:
                out.append(_upstream_finding(victims, *up, ev.seen, places, ev.wait_us))
                _cost(out[-1], victims, ev.role_of, ev.periods.get(job))
            continue
        for f in causes:
            _cost(f, victims, ev.role_of, ev.periods.get(job))
            if victims:
                f.affected = sorted({*f.affected, *(v.component for v in victims)})
                f.evidence["victims"] = ",".join(f.affected)
                f.evidence["recv_wait_us"] = ev.wait_us.get(proc_of(f))
                f.summary += f"; {len(victims)} ranks of its pipeline only waited on it"
        out += causes
    return out
