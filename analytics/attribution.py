"""Attribute a job's step time to workers, stages and op types by replaying its step graph, and name causes.

The ideal step replays every op at its peers' typical own duration and gap. A cause's cost is the
step time it adds: (replayed step with it) / (replayed step without it) - 1, the median over the steps
where it acts. Ranks that only waited on a cause are listed as ``affected``, never blamed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from c4.analytics.findings import Finding
from c4.analytics.step_graph import KIND_COMPUTE, KIND_HOST, KIND_P2P, StepGraph, build_graph, replay
from c4.step_trace import OPS

DETECTOR = "step_attribution"
#: An op (or a rank's compute in a step) this much slower than its peers' typical is slow.
SLOW_RATIO = 1.10
#: ... and this many robust standard deviations of the ranks' per-step compute ratios (those under
#: SLOW_RATIO) above 1: few microbatches per step make a rank's compute per step noisier.
NOISE_SIGMAS = 4.0
#: A p2p link whose own transfer time is this much above its peers' typical is slow.
SLOW_LINK_RATIO = 1.20
#: A rank slow on at least this share of the analysed steps is a slow worker (else data imbalance) ...
PERSISTENT_SHARE = 0.8
#: ... counted from its first slow step (a worker that turns slow mid-trace), over at least this many steps.
MIN_ONSET_STEPS = 3
#: ... or this many when other ranks are slow on steps where it is not (the job shows data imbalance): with D
#: replicas drawing the long batch at random, one replica draws it k steps running with probability
#: D^-(k-1) per start, 1/4 at k=3 for D=2 (a run that looks like an onset), 1/32 at k=6.
DATA_LIKE_ONSET_STEPS = 2 * MIN_ONSET_STEPS
#: A replica is slow as a whole on a step when its slow ranks sit on two or more pipeline stages and make up
#: at least this share of its ranks: its micro-batches flow through every stage, one worker computes on one.
REPLICA_SHARE = 0.5
#: A cause must cost at least this share of step time to be reported.
MIN_SLOWDOWN_FRAC = 0.03
#: A rank's host-side delay in a step above this share of the ideal step is a stall.
STALL_SHARE = 0.02
#: A rank whose waiting falls by more than this share of the ideal step without a cause is affected by it.
AFFECTED_SHARE = 0.01
#: Workers replayed one by one for by_worker (largest own excess first), besides every blamed rank.
TOP_WORKERS = 8


@dataclass
class JobAttribution:
    """One job's step time: actual vs ideal, what each worker, stage and op type costs, and the causes."""

    job: str
    steps: int
    actual_step_s: float
    ideal_step_s: float
    slowdown_frac: float
    by_worker: list[dict[str, Any]]
    by_stage: list[dict[str, Any]]
    by_op: list[dict[str, Any]]
    findings: list[Finding]
    steps_skipped: int = 0  # steps left out: a rank without ops, or a p2p op without its peer

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (findings as dicts with their class, component, cost and victims)."""
        out = asdict(self)
        out["findings"] = [_finding_json(f) for f in self.findings]
        return out


def _finding_json(f: Finding) -> dict[str, Any]:
    return {
        "fault_id": f.fault_id,
        "class": f.fault_class,
        "component_type": f.component_type,
        "component": f.component,
        "node": f.node,
        "job": f.job,
        "slowdown_frac": f.slowdown_frac,
        "affected": f.affected,
        "confidence": f.confidence,
        "action": f.action,
        "summary": f.summary,
        "first_seen": f.first_seen.isoformat() if f.first_seen else None,
        "last_seen": f.last_seen.isoformat() if f.last_seen else None,
        "evidence": f.evidence,
    }


@dataclass
class _Scenario:
    name: str
    own_s: np.ndarray
    gap_s: np.ndarray
    acts: np.ndarray | None = None  # steps where the cause acts (None: every step)
    meta: dict[str, Any] = field(default_factory=dict)


def attribute(trace: pl.DataFrame, min_steps: int = 3) -> list[JobAttribution]:
    """One attribution per job of a validated trace; a job with fewer than min_steps analysed steps gets no findings."""
    return [
        _attribute_job(build_graph(trace, job), min_steps) for job in sorted(trace["job"].unique().to_list())
    ]


def _attribute_job(g: StepGraph, min_steps: int) -> JobAttribution:
    n_steps = len(g.steps)
    if n_steps == 0:
        return JobAttribution(g.job, 0, 0.0, 0.0, 0.0, [], [], [], [], g.steps_skipped)
    own, gap = g.own_s, g.gap_s
    typ_own, typ_gap = g.typ_own_s, g.typ_gap_s
    compute = g.node_kind == KIND_COMPUTE
    host = g.node_kind == KIND_HOST
    scenarios: list[_Scenario] = [
        _Scenario("base", own, gap),
        _Scenario("ideal", typ_own, typ_gap),
    ]
    stats = _rank_step_stats(g)
    causes = _detect(g, stats)
    for cause in causes:
        scenarios.append(cause)
    if len(causes) > 1:  # each cause alone, the others removed: a cause hidden behind another still shows
        scenarios += _alone(own, gap, causes)
    workers = _worker_candidates(g, stats, causes)
    for r in workers:
        mine = g.node_rank == r
        sel = mine & (compute | host)
        scenarios.append(
            _Scenario(
                f"worker:{r}", np.where(sel, typ_own, own), np.where(mine, typ_gap, gap), meta={"rank": r}
            )
        )
    stages = sorted(set(g.rank_pp.tolist()))
    for s in stages:
        sel = compute & (g.node_stage == s) & (g.xstage_own_s < typ_own)
        scaled = own * np.where(sel, g.xstage_own_s / np.where(typ_own > 0, typ_own, 1.0), 1.0)
        scenarios.append(_Scenario(f"stage:{s}", scaled, gap, meta={"pp_stage": s}))
    ops_present = sorted(set(g.node_op.tolist()))
    for o in ops_present:
        sel = g.node_op == o
        scenarios.append(
            _Scenario(
                f"op:{OPS[o]}", np.where(sel, typ_own, own), np.where(sel, typ_gap, gap), meta={"op": OPS[o]}
            )
        )

    rep = replay(g, [s.own_s for s in scenarios], [s.gap_s for s in scenarios])
    base = rep.step_s[:, 0]
    actual = float(np.median(g.actual_step_s))
    ideal = float(np.median(rep.step_s[:, 1]))

    def cost(i: int) -> float:
        return float(np.median(base - rep.step_s[:, i]))

    def share(c: float) -> float:
        return round(c / actual, 4) if actual > 0 else 0.0

    index = {s.name: i for i, s in enumerate(scenarios)}
    by_worker = []
    for r in workers:
        c = cost(index[f"worker:{r}"])
        by_worker.append(
            {
                "rank": int(g.ranks[r]),
                "dp_rank": int(g.rank_dp[r]),
                "pp_stage": int(g.rank_pp[r]),
                "tp_rank": int(g.rank_tp[r]),
                "cost_s": round(c, 6),
                "share": share(c),
            }
        )
    by_worker.sort(key=lambda d: -d["cost_s"])
    by_stage = [
        {
            "pp_stage": int(s),
            "cost_s": round(cost(index[f"stage:{s}"]), 6),
            "share": share(cost(index[f"stage:{s}"])),
        }
        for s in stages
    ]
    by_stage.sort(key=lambda d: -d["cost_s"])
    by_op = [
        {
            "op": OPS[o],
            "cost_s": round(cost(index[f"op:{OPS[o]}"]), 6),
            "share": share(cost(index[f"op:{OPS[o]}"])),
        }
        for o in ops_present
    ]
    by_op.sort(key=lambda d: -d["cost_s"])

    findings: list[Finding] = []
    if n_steps >= min_steps:
        for cause in causes:
            i = index[cause.name]
            acts = cause.acts if cause.acts is not None else np.ones(n_steps, dtype=bool)
            if not acts.any():
                continue
            frac = float(np.median(base[acts]) / np.median(rep.step_s[acts, i]) - 1.0)
            with_it, without = i, 0  # whose waiting it lengthens: with the cause vs. without it
            alone = frac
            if f"alone:{cause.name}" in index:
                with_it, without = index[f"alone:{cause.name}"], index["without_causes"]
                alone = float(
                    np.median(rep.step_s[acts, with_it]) / np.median(rep.step_s[acts, without]) - 1.0
                )
            if max(frac, alone) < MIN_SLOWDOWN_FRAC:
                continue
            if frac < MIN_SLOWDOWN_FRAC:  # hidden behind another cause: its victims are those it delays alone
                saved = np.median(rep.wait_s[acts, :, with_it] - rep.wait_s[acts, :, without], axis=0)
            else:
                saved = np.median(rep.wait_s[acts, :, 0] - rep.wait_s[acts, :, i], axis=0)
            blamed = set(cause.meta.get("ranks", [])) | set(cause.meta.get("slow_ranks", []))
            affected = [
                f"{g.job}/rank{int(g.ranks[r])}"
                for r in np.flatnonzero(saved > AFFECTED_SHARE * ideal)
                if int(r) not in blamed
            ]
            cause.meta["alone_slowdown_frac"] = round(alone, 4)
            findings.append(_finding(g, cause, frac, affected, acts))
    findings = _merge_same_component(findings)
    return JobAttribution(
        job=g.job,
        steps=n_steps,
        actual_step_s=round(actual, 6),
        ideal_step_s=round(ideal, 6),
        slowdown_frac=round(actual / ideal - 1.0, 4) if ideal > 0 else 0.0,
        by_worker=by_worker,
        by_stage=by_stage,
        by_op=by_op,
        findings=findings,
        steps_skipped=g.steps_skipped,
    )


@dataclass
class _Stats:
    compute_ratio: np.ndarray  # (ranks, steps): the rank's compute own / its peers' typical
    stall_s: np.ndarray  # (ranks, steps): host-side delay above typical (gaps and host ops)
    excess_s: np.ndarray  # (ranks, steps): own compute/host excess plus gap excess


def _rank_step_stats(g: StepGraph) -> _Stats:
    n_r, n_k = g.n_ranks, len(g.steps)
    idx = g.node_rank * n_k + g.node_step
    compute = g.node_kind == KIND_COMPUTE
    host = g.node_kind == KIND_HOST

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(idx, weights=values, minlength=n_r * n_k).reshape(n_r, n_k)

    own_c = total(np.where(compute, g.own_s, 0.0))
    typ_c = total(np.where(compute, g.typ_own_s, 0.0))
    ratio = np.divide(own_c, typ_c, out=np.ones_like(own_c), where=typ_c > 0)
    gap_x = np.maximum(g.gap_s - g.typ_gap_s, 0.0)
    host_x = np.where(host, np.maximum(g.own_s - g.typ_own_s, 0.0), 0.0)
    stall = total(gap_x + host_x)
    comp_x = np.where(compute, np.maximum(g.own_s - g.typ_own_s, 0.0), 0.0)
    return _Stats(compute_ratio=ratio, stall_s=stall, excess_s=stall + total(comp_x))


def _detect(g: StepGraph, st: _Stats) -> list[_Scenario]:
    """Candidate causes, each as the scenario that removes it (kept later only if it costs enough)."""
    own, gap, typ_own, typ_gap = g.own_s, g.gap_s, g.typ_own_s, g.typ_gap_s
    compute = g.node_kind == KIND_COMPUTE
    host = g.node_kind == KIND_HOST
    n_k = len(g.steps)
    out: list[_Scenario] = []
    ratio = st.compute_ratio
    usual = ratio[ratio < SLOW_RATIO]  # the rank-steps not slow by the fixed bar: their spread is the noise
    center = float(np.median(usual)) if usual.size else 1.0
    noise = 1.4826 * float(np.median(np.abs(usual - center))) if usual.size else 0.0
    slow = ratio > max(center * SLOW_RATIO, center + NOISE_SIGMAS * noise)
    # a rank slow with its whole replica is slow for the replica's data, never as a worker
    worker_slow = slow & ~_replica_wide(g, slow)
    onsets = {r: _onset(worker_slow[r], _onset_steps(slow, r)) for r in range(g.n_ranks)}
    persistent = [r for r, k in onsets.items() if k is not None]
    # one rank slow on some steps only, nobody else: still that worker; a rank slow only on the newest
    # few steps is a cause that has just begun (judged once it has MIN_ONSET_STEPS), not data imbalance
    transient_ranks = [
        r for r in range(g.n_ranks) if r not in persistent and slow[r].any() and not _just_begun(slow[r])
    ]
    if len(transient_ranks) == 1 and worker_slow[transient_ranks[0]].sum() >= 2:
        persistent.append(transient_ranks.pop())
    since = np.arange(n_k)[None, :] >= np.array([onsets.get(r) or 0 for r in range(g.n_ranks)])[:, None]
    for ranks in _by_tp_group(g, persistent):
        sel = compute & np.isin(g.node_rank, ranks)
        acts = (worker_slow & since)[ranks].any(axis=0)
        meta = {"class": "slow_worker", "ranks": ranks, "steps_slow": int(acts.sum())}
        if len(ranks) > 1:
            meta["tp_group"] = (int(g.rank_pp[ranks[0]]), int(g.rank_dp[ranks[0]]))
        out.append(_Scenario(f"slow_worker:{ranks}", np.where(sel, typ_own, own), gap, acts=acts, meta=meta))
    if transient_ranks:
        rank_step = np.zeros((g.n_ranks, n_k), dtype=bool)
        rank_step[transient_ranks] = slow[transient_ranks]
        sel = compute & rank_step[g.node_rank, g.node_step]
        out.append(
            _Scenario(
                "data_imbalance",
                np.where(sel, typ_own, own),
                gap,
                acts=rank_step.any(axis=0),
                meta={
                    "class": "data_imbalance",
                    "ranks": [],
                    "slow_ranks": transient_ranks,
                    "rank_steps": int(rank_step.sum()),
                },
            )
        )
    for s in sorted(set(g.rank_pp.tolist())):
        sel = compute & (g.node_stage == s)
        typ_sum, x_sum = typ_own[sel].sum(), g.xstage_own_s[sel].sum()
        if x_sum > 0 and typ_sum / x_sum > SLOW_RATIO:
            scaled = own * np.where(sel, g.xstage_own_s / np.where(typ_own > 0, typ_own, 1.0), 1.0)
            out.append(
                _Scenario(
                    f"stage_imbalance:{s}",
                    scaled,
                    gap,
                    meta={
                        "class": "stage_imbalance",
                        "ranks": [],
                        "pp_stage": s,
                        "stage_over_typical": round(float(typ_sum / x_sum), 3),
                    },
                )
            )
    # CPU-side stalls: group the stalled ranks by host (or rank when the host is unknown)
    ideal_guess = float(np.median(g.actual_step_s))
    stalled = st.stall_s > STALL_SHARE * ideal_guess
    places: dict[str, list[int]] = {}
    for r in np.flatnonzero(stalled.any(axis=1)):
        h = g.rank_host[r]
        places.setdefault(f"{h}/cpu" if h else f"{g.job}/rank{int(g.ranks[r])}", []).append(int(r))
    for place, ranks in places.items():
        mine = np.isin(g.node_rank, ranks)
        out.append(
            _Scenario(
                f"cpu_stall:{place}",
                np.where(mine & host, typ_own, own),
                np.where(mine, np.minimum(gap, typ_gap), gap),
                acts=stalled[ranks].any(axis=0),
                meta={
                    "class": "cpu_stall",
                    "ranks": ranks,
                    "place": place,
                    "stall_s_median": round(float(np.median(st.stall_s[ranks].max(axis=0))), 6),
                },
            )
        )
    # slow p2p links (both directions between two ranks) and slow collective groups: own transfer time
    # against the peers' typical (the same op on the same stage's other groups for a collective)
    n_r = g.n_ranks
    for link, ratio, acts in _slow_transfers(g, (g.node_kind == KIND_P2P) & (g.node_link >= 0), g.node_link):
        a, b = divmod(link, n_r)
        sel = (g.node_kind == KIND_P2P) & (g.node_link == link)
        meta = {"class": "slow_comm", "ranks": [a], "link": (a, b), "transfer_over_typical": round(ratio, 3)}
        out.append(_Scenario(f"slow_comm:{a}->{b}", np.where(sel, typ_own, own), gap, acts=acts, meta=meta))
    for comm, ratio, acts in _slow_transfers(g, g.node_comm >= 0, g.node_comm):
        sel = g.node_comm == comm
        meta = {
            "class": "slow_comm",
            "ranks": sorted(set(g.node_rank[sel].tolist())),
            "comm": g.comms[comm],
            "transfer_over_typical": round(ratio, 3),
        }
        out.append(
            _Scenario(f"slow_comm:{g.comms[comm]}", np.where(sel, typ_own, own), gap, acts=acts, meta=meta)
        )
    return out


def _slow_steps(
    keys: np.ndarray, steps: np.ndarray, ratio: np.ndarray, n_steps: int
) -> dict[int, np.ndarray]:
    """Per link (or group): the steps on which its median transfer ratio was slow (> SLOW_LINK_RATIO)."""
    per = (
        pl.DataFrame({"key": keys, "step": steps, "ratio": ratio})
        .group_by(["key", "step"])
        .agg(pl.col("ratio").median())
        .filter(pl.col("ratio") > SLOW_LINK_RATIO)
    )
    out: dict[int, np.ndarray] = {}
    for key, step in per.select("key", "step").iter_rows():
        out.setdefault(int(key), np.zeros(n_steps, dtype=bool))[int(step)] = True
    return out


def _slow_transfers(g: StepGraph, sel: np.ndarray, keys: np.ndarray) -> list[tuple[int, float, np.ndarray]]:
    """(key, transfer ratio, slow steps) of each link or collective group (``keys`` of the ops in ``sel``)
    whose own transfer time is slow: its median over the window above SLOW_LINK_RATIO, or slow from an onset
    on (most of the window need not be slow yet; its ratio is then the median since the onset)."""
    if not sel.any():
        return []
    own, typ = g.own_s[sel], g.typ_own_s[sel]
    ratio = own / np.where(typ > 0, typ, np.inf)
    key_of, step_of = keys[sel], g.node_step[sel]
    steps_of = _slow_steps(key_of, step_of, ratio, len(g.steps))
    found: dict[int, float] = {
        int(k): float(r)
        for k, r in pl.DataFrame({"key": key_of, "ratio": ratio})
        .group_by("key")
        .agg(pl.col("ratio").median())
        .filter(pl.col("ratio") > SLOW_LINK_RATIO)
        .iter_rows()
    }
    for k, slow in steps_of.items():
        if k not in found and _slow_from_onset(slow):
            mine = (key_of == k) & (step_of >= int(np.flatnonzero(slow)[0]))
            found[k] = float(np.median(ratio[mine]))
    n_k = len(g.steps)
    return [(k, found[k], steps_of.get(k, np.zeros(n_k, dtype=bool))) for k in sorted(found)]


def _just_begun(slow_steps: np.ndarray) -> bool:
    """Slow only on a run of the newest steps, shorter than MIN_ONSET_STEPS: a cause that has just begun."""
    idx = np.flatnonzero(slow_steps)
    return bool(
        len(idx) and idx[-1] == len(slow_steps) - 1 and idx[-1] - idx[0] + 1 == len(idx) < MIN_ONSET_STEPS
    )


def _slow_from_onset(slow_steps: np.ndarray, min_steps: int = MIN_ONSET_STEPS) -> bool:
    """Slow on (nearly) every step from its first slow step on, for at least ``min_steps`` steps."""
    idx = np.flatnonzero(slow_steps)
    if len(idx) < min_steps:
        return False
    return bool(slow_steps[idx[0] :].mean() >= PERSISTENT_SHARE)


def _onset(slow_steps: np.ndarray, min_steps: int) -> int | None:
    """The earliest step from which a rank is slow on (nearly) every step, at least ``min_steps`` of them
    (None: no such step); a slow step before it (e.g. a long batch of its own) does not move its onset."""
    n = len(slow_steps)
    after = np.cumsum(slow_steps[::-1])[::-1]  # slow steps from k on
    share = after / (n - np.arange(n))
    ok = slow_steps & (after >= min_steps) & (share >= PERSISTENT_SHARE)
    return int(np.flatnonzero(ok)[0]) if ok.any() else None


def _onset_steps(slow: np.ndarray, r: int) -> int:
    """Slow steps rank r needs to be a slow worker: DATA_LIKE_ONSET_STEPS when other ranks are slow on steps
    where it is not (different ranks slow on different steps: a run of it may be its share of long batches),
    else MIN_ONSET_STEPS."""
    others = np.delete(slow, r, axis=0).any(axis=0)
    return DATA_LIKE_ONSET_STEPS if (others & ~slow[r]).any() else MIN_ONSET_STEPS


def _replica_wide(g: StepGraph, slow: np.ndarray) -> np.ndarray:
    """(ranks, steps): rank-steps slow together with their whole data-parallel replica (slow ranks on two or
    more of its pipeline stages, at least REPLICA_SHARE of its ranks): the replica's batch, not a worker."""
    wide = np.zeros_like(slow)
    for d in np.unique(g.rank_dp):
        mine = g.rank_dp == d
        stages = g.rank_pp[mine]
        ranks_slow = slow[mine]
        n_stages = np.array([np.unique(stages[ranks_slow[:, k]]).size for k in range(slow.shape[1])])
        whole = (n_stages >= 2) & (ranks_slow.mean(axis=0) >= REPLICA_SHARE)
        wide[mine] = ranks_slow & whole
    return wide


def _by_tp_group(g: StepGraph, ranks: list[int]) -> list[list[int]]:
    """Slow ranks one by one, except that the slow ranks of one TP group that waits for itself inside
    forward/backward go together: their timings cannot tell which of them is slow."""
    if not g.tp_synced:
        return [[r] for r in ranks]
    groups: dict[tuple[int, int], list[int]] = {}
    for r in ranks:
        groups.setdefault((int(g.rank_pp[r]), int(g.rank_dp[r])), []).append(r)
    return [sorted(v) for v in groups.values()]


def _alone(own: np.ndarray, gap: np.ndarray, causes: list[_Scenario]) -> list[_Scenario]:
    """Every cause removed, and each cause alone (all the others removed)."""
    own_all, gap_all = own.copy(), gap.copy()
    changed = []
    for c in causes:
        d_own, d_gap = c.own_s != own, c.gap_s != gap
        own_all[d_own], gap_all[d_gap] = c.own_s[d_own], c.gap_s[d_gap]
        changed.append((d_own, d_gap))
    out = [_Scenario("without_causes", own_all, gap_all)]
    for c, (d_own, d_gap) in zip(causes, changed, strict=True):
        out.append(_Scenario(f"alone:{c.name}", np.where(d_own, own, own_all), np.where(d_gap, gap, gap_all)))
    return out


def _worker_candidates(g: StepGraph, st: _Stats, causes: list[_Scenario]) -> list[int]:
    blamed = {
        r for c in causes if c.meta.get("class") in ("slow_worker", "cpu_stall") for r in c.meta["ranks"]
    }
    excess = st.excess_s.sum(axis=1)
    top = [int(r) for r in np.argsort(-excess, kind="stable")[:TOP_WORKERS]]
    return sorted(blamed | set(top))


def _merge_same_component(findings: list[Finding]) -> list[Finding]:
    """One finding per fault id (e.g. two slow links from one host): the costliest, the others in its evidence."""
    kept: dict[str, Finding] = {}
    for f in sorted(findings, key=lambda f: -(f.slowdown_frac or 0.0)):
        if f.fault_id in kept:
            first = kept[f.fault_id]
            first.evidence.setdefault("also", []).append(
                {"summary": f.summary, "slowdown_frac": f.slowdown_frac}
            )
            first.affected = sorted(set(first.affected) | set(f.affected))
        else:
            kept[f.fault_id] = f
    return list(kept.values())


def _rank_label(g: StepGraph, r: int) -> str:
    return f"{g.job}/rank{int(g.ranks[r])}"


def _finding(g: StepGraph, cause: _Scenario, frac: float, affected: list[str], acts: np.ndarray) -> Finding:
    cls = cause.meta["class"]
    acting = [lay for lay, a in zip(g.steps, acts, strict=True) if a]
    first = datetime.fromtimestamp(acting[0].start_epoch_s, UTC).replace(tzinfo=None)
    last = datetime.fromtimestamp(acting[-1].start_epoch_s, UTC).replace(tzinfo=None)
    steps_acting = [lay.step for lay in acting]
    evidence: dict[str, Any] = {
        "steps_analysed": len(g.steps),
        "steps_acting": len(steps_acting),
        "first_step": steps_acting[0],
        "last_step": steps_acting[-1],
        "slowdown_frac": round(frac, 4),
        "alone_slowdown_frac": cause.meta.get("alone_slowdown_frac", round(frac, 4)),
    }
    alone = cause.meta.get("alone_slowdown_frac", frac)
    cost = f"costs the job {frac:.1%} step time"
    if abs(alone - frac) > 0.01:
        cost += f" ({alone:.1%} once the other causes are gone)"
    node = ""
    if cls == "slow_worker" and "tp_group" in cause.meta:
        ranks = cause.meta["ranks"]
        s, d = cause.meta["tp_group"]
        hosts = {g.rank_host[r] for r in ranks}
        gpus = [
            f"{g.rank_host[r]}/gpu{g.rank_local[r]}"
            for r in ranks
            if g.rank_host[r] and g.rank_local[r] is not None
        ]
        component, ctype, action = f"{g.job}/stage{s}/dp{d}/tp", "tp_group", "investigate"
        node = hosts.pop() if len(hosts) == 1 and None not in hosts else ""
        evidence.update(
            ranks=[int(g.ranks[r]) for r in ranks], gpus=gpus, steps_slow=cause.meta["steps_slow"]
        )
        summary = (
            f"the tensor-parallel group of stage {s}, replica {d} (ranks {[int(g.ranks[r]) for r in ranks]}) computes "
            f"slower than its peers on {cause.meta['steps_slow']}/{len(g.steps)} steps; its ranks wait for each other "
            f"inside forward/backward, so one of their GPUs is slow (its counters tell which); {cost}"
        )
    elif cls == "slow_worker":
        r = cause.meta["ranks"][0]
        host, local = g.rank_host[r], g.rank_local[r]
        component = f"{host}/gpu{local}" if host and local is not None else _rank_label(g, r)
        node = host or ""
        evidence.update(_identity(g, r), steps_slow=cause.meta["steps_slow"])
        summary = (
            f"rank {int(g.ranks[r])} (stage {int(g.rank_pp[r])}, dp {int(g.rank_dp[r])}) computes slower than its "
            f"peers on {cause.meta['steps_slow']}/{len(g.steps)} steps; {cost}"
        )
        ctype, action = "gpu", "investigate"
    elif cls == "stage_imbalance":
        s = cause.meta["pp_stage"]
        component, ctype, action = f"{g.job}/stage{s}", "job_stage", "rebalance_stages"
        evidence.update(pp_stage=s, stage_over_typical=cause.meta["stage_over_typical"])
        summary = (
            f"pipeline stage {s} computes {cause.meta['stage_over_typical']:.2f}x the typical stage on every step "
            f"(unequal work, not a fault); {cost}"
        )
    elif cls == "data_imbalance":
        slow_ranks = [int(g.ranks[r]) for r in cause.meta["slow_ranks"]]
        component, ctype, action = g.job, "job", "balance_data"
        evidence.update(slow_ranks=slow_ranks, rank_steps=cause.meta["rank_steps"])
        summary = (
            f"{len(slow_ranks)} different ranks compute slower on different steps ({cause.meta['rank_steps']} "
            f"rank-steps): uneven data per rank; {cost}"
        )
    elif cls == "cpu_stall":
        ranks = cause.meta["ranks"]
        component, ctype, action = cause.meta["place"], "cpu", "investigate_host"
        node = g.rank_host[ranks[0]] or ""
        evidence.update(
            ranks=[int(g.ranks[r]) for r in ranks],
            gpus=[x for x in (_gpu_label(g, r) for r in ranks) if x],  # what the host join reads
            stall_s_median=cause.meta["stall_s_median"],
            step_s=round(float(np.median(g.actual_step_s)), 6),  # the last stalled step ends a step later
        )
        summary = (
            f"host-side delay (gaps while dependencies were met, or slow data loading/checkpoint) on ranks "
            f"{[int(g.ranks[r]) for r in ranks]}; {cost}"
        )
    elif "comm" in cause.meta:  # a slow collective group
        ranks = cause.meta["ranks"]
        component, ctype, action = f"{g.job}/{cause.meta['comm']}", "communicator", "investigate_link"
        evidence.update(
            comm=cause.meta["comm"],
            ranks=[int(g.ranks[r]) for r in ranks],
            hosts=sorted({g.rank_host[r] for r in ranks if g.rank_host[r]}),
            transfer_over_typical=cause.meta["transfer_over_typical"],
        )
        summary = (
            f"collective group {cause.meta['comm']} ({len(ranks)} ranks) takes "
            f"{cause.meta['transfer_over_typical']:.2f}x the same op's typical on its stage; {cost}"
        )
    else:  # slow_comm on a p2p link
        a, b = cause.meta["link"]
        host = g.rank_host[a]
        ends = [_gpu_label(g, a), _gpu_label(g, b)]  # the two GPUs the pipeline link joins
        component = "->".join(ends) if all(ends) else f"{_rank_label(g, a)}->{_rank_label(g, b)}"
        ctype, action = "link", "investigate_link"
        node = host or ""
        evidence.update(
            sender=int(g.ranks[a]),
            receiver=int(g.ranks[b]),
            sender_host=host,
            receiver_host=g.rank_host[b],
            transfer_over_typical=cause.meta["transfer_over_typical"],
        )
        summary = (
            f"p2p transfers between rank {int(g.ranks[a])} and rank {int(g.ranks[b])} (next stage) take "
            f"{cause.meta['transfer_over_typical']:.2f}x its peers' typical; {cost}"
        )
    return Finding(
        detector=DETECTOR,
        fault_class=cls,
        component_type=ctype,
        component=component,
        node=node,
        first_seen=first,
        last_seen=last,
        confidence=0.9,
        action=action,
        summary=summary,
        evidence=evidence,
        job=g.job,
        communicator=cause.meta.get("comm", ""),
        slowdown_frac=round(frac, 4),
        affected=affected,
    )


def _gpu_label(g: StepGraph, r: int) -> str:
    """``<host>/gpu<local_rank>`` of a rank, or "" when the trace does not say where it ran."""
    host, local = g.rank_host[r], g.rank_local[r]
    return f"{host}/gpu{local}" if host and local is not None and local >= 0 else ""


def _identity(g: StepGraph, r: int) -> dict[str, Any]:
    return {
        "rank": int(g.ranks[r]),
        "dp_rank": int(g.rank_dp[r]),
        "pp_stage": int(g.rank_pp[r]),
        "tp_rank": int(g.rank_tp[r]),
        "host": g.rank_host[r],
        "local_rank": g.rank_local[r],
    }
