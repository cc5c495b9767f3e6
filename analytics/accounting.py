"""Job accounting from telemetry: what one job's wall time went to (productive, slowed, hung, restarting,
redone), each lost interval attributed to the fault that explains it, the rest "unexplained".

Pure: ``account_job`` takes one job's collectives (any ranks; the lowest rank of each communicator is read,
as in ``recovery``), its faults and C4's restart commands, optionally its training-step trace, and returns
the intervals that tile its accounted range. Definitions:

- progress: the step ends of the job's step trace (the lowest rank's last op of each whole step) where a
  run has one; else the records of its pace communicator (the one with the longest period: it runs once
  per iteration in data-parallel jobs; in a job without one, e.g. TP x PP only, every communicator runs
  several times per iteration and an "iteration" is the pace communicator's typical gap); a run is the communicators alive together, and a new one begins when a
  communicator starts again at sequence number <= ``NEW_COMM_MAX_FIRST_SN`` after every communicator of
  the run before it has gone quiet (a sequence number drop on one communicator splits it first);
- the normal period is the median of the iterations no fault covers (all iterations when fewer than
  ``MIN_HEALTHY_ITERATIONS`` are free of faults); an iteration up to ``slow_threshold`` x the period is
  productive (the threshold grows with the healthy iterations' own spread, so jitter is not lost time);
- slowed: an iteration longer than that, up to ``HANG_PERIODS`` periods: lost = its length - the period;
- hung: an iteration longer than ``HANG_PERIODS`` periods that ends with progress (lost = length - period),
  or a silence at the end of the range, after one period of work, that a fault of the job covers, or
  while the job's processes still hold their GPUs (basis ``gpu_processes``); a silence at the end with
  neither is the job's end, not lost time (the account ends at its last progress);
- restarting: from a run's last progress to the next run's first record; when C4's restart command ran
  in that gap, from the last progress to the command is hung and from the command on restarting;
- redone: the work a killed run did after its last checkpoint, which the next run does again (where the
  twin's truth counts it too: in the killed run): from the old run's start of the step the new run resumed
  at, when both runs have a step trace; else from the end of the old run's last ``checkpoint`` op; else
  from its last checkpoint at ``checkpoint_interval_s`` from its start; to its last progress (a slowed
  iteration in there keeps its extra time slowed). With none of these known, a zero-length ``redone`` row
  with basis ``unknown`` says so (that work stays productive: telemetry cannot tell it from new work);
- attribution: a lost interval belongs to the faults whose [first_seen, resolution or last_seen + grace]
  overlaps it (the earliest onset wins); restarting after C4's restart command belongs to that command's
  fault, redone to the fault of its restart; with none, its category is ``unexplained`` (``kind`` keeps
  what it was).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import polars as pl

#: A communicator whose first record has at most this sequence number started anew (as recovery.py).
NEW_COMM_MAX_FIRST_SN = 2
#: Records a communicator needs to set the pace of its run (its median period).
MIN_PACE_RECORDS = 4
#: Fault-free iterations needed to learn the normal period from them alone.
MIN_HEALTHY_ITERATIONS = 4
#: An iteration longer than this many periods is a hang, not a slowdown (the hang detector's 5 periods).
HANG_PERIODS = 5.0
#: An iteration at most this fraction longer than the period is productive, whatever the spread.
MIN_SLOW_FRAC = 0.05
#: ... and at most this many median absolute deviations of the healthy iterations above the period.
SLOW_MADS = 4.0
#: A fault explains lost time up to this long after it resolved or was last seen, in seconds.
FAULT_GRACE_S = 30.0
#: Productive stretches of at most this many periods between two lost intervals of the same cause are
#: merged into them (one row for a slowdown, not one per iteration).
MERGE_PERIODS = 3.0
#: The categories of job_accounting.
CATEGORIES = ("productive", "slowed", "hung", "restarting", "redone", "unexplained")


@dataclass(frozen=True)
class FaultSpan:
    """A fault as accounting sees it: when it can explain lost time, and what to name it."""

    fault_id: str
    fault_class: str
    component: str
    onset: datetime
    end: datetime  # resolution or last_seen, plus FAULT_GRACE_S (now when still open)


@dataclass
class Piece:
    """One interval of the account (lost_s: 0 productive, the extra time slowed, else its length)."""

    start: datetime
    end: datetime
    kind: str  # productive, slowed, hung, restarting, redone
    lost_s: float
    run: int
    basis: str = "collectives"
    fault: FaultSpan | None = None
    attributed: bool = False  # fault decided (by a command or a restart), not by overlap

    @property
    def wall_s(self) -> float:
        """Length in seconds."""
        return (self.end - self.start).total_seconds()


@dataclass
class JobAccount:
    """One job's account: the rows for job_accounting, the period it used, what could not be read."""

    job: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    period_s: float | None = None
    runs: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    outcome: str = "ok"  # ok, no_records, no_period
    silent_since: datetime | None = (
        None  # the last progress, when the job has been silent since (a hang or its end)
    )


def _seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def _at(t: datetime, s: float) -> datetime:
    return t + timedelta(seconds=s)


def fault_spans(faults: pl.DataFrame, now: datetime) -> list[FaultSpan]:
    """Faults (fault_id, fault_class, component, first_seen, last_seen, resolved_at: null while open) as spans."""
    out = []
    for f in faults.iter_rows(named=True):
        if f.get("first_seen") is None:
            continue
        resolved = f.get("resolved_at")
        end = now if resolved is None else max(resolved, f.get("last_seen") or resolved)
        out.append(
            FaultSpan(
                f["fault_id"],
                f.get("fault_class") or "",
                f.get("component") or "",
                f["first_seen"],
                _at(end, FAULT_GRACE_S) if resolved is not None else end,
            )
        )
    return sorted(out, key=lambda s: (s.onset, s.fault_id))


def _segments(colls: pl.DataFrame, skipped: dict[str, int]) -> pl.DataFrame:
    """Lowest-rank records per communicator, split where its sequence number starts again, each segment in
    sequence order with times made monotone (a clock stepping back is counted, never turned into time)."""
    need = ["ts", "comm_id", "rank", "coll_sn"]
    bad = colls.filter(pl.any_horizontal(pl.col(c).is_null() for c in need))
    if bad.height:
        skipped["null_field"] = skipped.get("null_field", 0) + bad.height
    c = colls.drop_nulls(need).select(need).cast({"ts": pl.Datetime("us"), "coll_sn": pl.Int64})
    low = c.filter(pl.col("rank") == pl.col("rank").min().over("comm_id")).unique(
        ["comm_id", "ts", "coll_sn"]
    )
    low = low.sort(["comm_id", "ts", "coll_sn"])
    prev = pl.col("coll_sn").shift(1).over("comm_id")
    anew = (pl.col("coll_sn") < prev) & (pl.col("coll_sn") <= NEW_COMM_MAX_FIRST_SN)
    low = low.with_columns(anew.fill_null(False).cast(pl.Int64).cum_sum().over("comm_id").alias("part"))
    low = low.with_columns(pl.format("{}#{}", "comm_id", "part").alias("seg")).unique(
        ["seg", "coll_sn"], keep="first"
    )
    low = low.sort(["seg", "coll_sn"]).with_columns(
        pl.col("ts").cum_max().over("seg").alias("t"),
        (pl.col("ts") < pl.col("ts").shift(1).over("seg")).fill_null(False).alias("back"),
    )
    backwards = int(low["back"].sum())
    if backwards:
        skipped["clock_backwards"] = skipped.get("clock_backwards", 0) + backwards
    return low.select("seg", "comm_id", "coll_sn", "t")


def _runs(segs: pl.DataFrame) -> list[list[str]]:
    """Segments grouped into runs: a segment starting anew after every segment of the current run ended
    begins the next run."""
    info = (
        segs.group_by("seg")
        .agg(
            pl.col("t").min().alias("first"),
            pl.col("t").max().alias("last"),
            pl.col("coll_sn").min().alias("sn"),
        )
        .sort(["first", "seg"])
    )
    runs: list[list[str]] = []
    last_of_run: datetime | None = None
    for seg, first, last, sn in info.iter_rows():
        if runs and last_of_run is not None and sn <= NEW_COMM_MAX_FIRST_SN and first > last_of_run:
            runs.append([seg])
            last_of_run = last
        elif runs:
            runs[-1].append(seg)
            last_of_run = max(last_of_run, last) if last_of_run else last
        else:
            runs.append([seg])
            last_of_run = last
    return runs


def _pace(segs: pl.DataFrame, run: list[str]) -> list[datetime]:
    """The progress times of a run: its segment with the longest median gap among those with enough records
    (the one running once per iteration), else its longest segment."""
    r = segs.filter(pl.col("seg").is_in(run))
    stats = r.group_by("seg").agg(
        pl.len().alias("n"), (pl.col("t").diff().dt.total_microseconds() / 1e6).median().alias("gap")
    )
    ok = stats.filter(pl.col("n") >= MIN_PACE_RECORDS)
    pick = (
        ok.sort(["gap", "seg"], descending=[True, False]) if ok.height else stats.sort("n", descending=True)
    )
    seg = pick["seg"][0]
    return r.filter(pl.col("seg") == seg)["t"].to_list()


def _covering(spans: list[FaultSpan], start: datetime, end: datetime) -> FaultSpan | None:
    """The earliest-onset fault whose span overlaps [start, end]."""
    for s in spans:  # sorted by onset
        if s.onset <= end and s.end >= start:
            return s
    return None


def _period(paces: list[list[datetime]], spans: list[FaultSpan]) -> tuple[float, float] | None:
    """(normal period, spread) from the iterations no fault covers, else from all; None with too few."""
    gaps, healthy = [], []
    for p in paces:
        for a, b in zip(p, p[1:], strict=False):
            g = _seconds(a, b)
            if g <= 0:
                continue
            gaps.append(g)
            if _covering(spans, a, b) is None:
                healthy.append(g)
    use = healthy if len(healthy) >= MIN_HEALTHY_ITERATIONS else gaps
    if not use:
        return None
    s = pl.Series(use)
    med = float(s.median())
    return med, float((s - med).abs().median())


def _iterations(
    pace: list[datetime], start: datetime, run: int, period: float, slow_at: float
) -> list[Piece]:
    """Pieces from ``start`` through the run's progress times: each iteration productive, slowed or hung."""
    out = []
    for a, b in zip([start, *pace], pace, strict=False):
        g = _seconds(a, b)
        if g <= 0:
            continue
        if g <= slow_at:
            if out and out[-1].kind == "productive" and out[-1].end == a:
                out[-1].end = b  # one piece for a stretch of normal iterations
            else:
                out.append(Piece(a, b, "productive", 0.0, run))
        elif g <= HANG_PERIODS * period:
            out.append(Piece(a, b, "slowed", g - period, run))
        else:  # the iteration's work, then the hang
            out += [
                Piece(a, _at(a, period), "productive", 0.0, run),
                Piece(_at(a, period), b, "hung", g - period, run),
            ]
    return out


def _silence(
    a: datetime,
    b: datetime,
    run: int,
    commands: list[tuple[datetime, str]],
    spans: dict[str, FaultSpan],
    kind: str,
) -> list[Piece]:
    """A silence from ``a`` to ``b`` (a restart gap: kind restarting; the open end: hung): split at C4's
    restart command when one ran inside it (hung before, restarting after, both that command's fault)."""
    inside = [(t, f) for t, f in commands if a < t < b]
    if not inside:
        return [Piece(a, b, kind, _seconds(a, b), run)]
    t, fid = inside[0]
    span = spans.get(fid)
    return [
        Piece(a, t, "hung", _seconds(a, t), run, "restart_command", span, attributed=span is not None),
        Piece(t, b, "restarting", _seconds(t, b), run, "restart_command", span, attributed=span is not None),
    ]


def _redo_range(
    pieces: list[Piece], a: datetime, b: datetime, basis: str, fault: FaultSpan | None
) -> list[Piece]:
    """``pieces`` with the work done in [a, b] turned into redone (a slowed piece keeps its extra time
    slowed, pro rata; other kinds stay as they are)."""
    out = []
    for p in pieces:
        lo, hi = max(p.start, a), min(p.end, b)
        if p.kind not in ("productive", "slowed") or hi <= lo:
            out.append(p)
            continue
        frac = p.lost_s / p.wall_s if p.wall_s > 0 else 0.0
        if p.start < lo:
            out.append(replace(p, end=lo, lost_s=_seconds(p.start, lo) * frac))
        slow_s = _seconds(lo, hi) * frac
        if slow_s > 0:
            out.append(replace(p, start=lo, end=_at(lo, slow_s), lost_s=slow_s))
        mid = _at(lo, slow_s)
        out.append(Piece(mid, hi, "redone", _seconds(mid, hi), p.run, basis, fault, attributed=True))
        if hi < p.end:
            out.append(replace(p, start=hi, lost_s=_seconds(hi, p.end) * frac))
    return out


def _open_end(
    tail: datetime,
    now: datetime,
    run: int,
    period: float,
    commands: list[tuple[datetime, str]],
    by_id: dict[str, FaultSpan],
    spans: list[FaultSpan],
    alive_until: datetime | None,
) -> list[Piece]:
    """A silence from the last progress to ``now``: hung (after one period of the iteration's work) while a
    fault of the job covers it or C4's restart command ran in it; else hung, unexplained, up to when the
    job's processes were last seen on their GPUs (``alive_until``); else the job ended at ``tail``."""
    if any(tail < t < now for t, _ in commands):
        return _silence(tail, now, run, commands, by_id, "hung")
    work = Piece(tail, _at(tail, period), "productive", 0.0, run)
    if _covering(spans, work.end, now):
        return [work, *_silence(work.end, now, run, commands, by_id, "hung")]
    if alive_until is not None and _seconds(tail, alive_until) > HANG_PERIODS * period:
        end = min(alive_until, now)
        return [work, Piece(work.end, end, "hung", _seconds(work.end, end), run, "gpu_processes")]
    return []


def _step_paces(
    step_ops: pl.DataFrame, paces: list[list[datetime]], starts: list[datetime]
) -> tuple[list[list[datetime]], list[datetime]]:
    """Progress from the step trace where it has it: each run's step ends (the lowest rank's last op of
    each of its whole steps), and a run's start at its first op when that comes before its first record.
    A run with fewer than MIN_PACE_RECORDS whole steps keeps its collectives."""
    ops = step_ops.sort("ts")
    bounds = [
        _new_run_ts(ops.filter(pl.col("ts") >= starts[k - 1]), paces[k - 1][-1], starts[k]) if k else None
        for k in range(len(paces))
    ]
    out_paces, out_starts = [], []
    for k, pace in enumerate(paces):
        lo = bounds[k] if k else ops["ts"].min()
        hi = bounds[k + 1] if k + 1 < len(paces) else None
        mine = ops.filter((pl.col("ts") >= lo) & ((pl.col("ts") < hi) if hi is not None else True))
        work = mine.filter(pl.col("op") != "checkpoint")
        steps = _whole_steps(work) if work.height else pl.DataFrame()
        ends = sorted(steps["end"].to_list()) if steps.height else []
        if len(ends) >= MIN_PACE_RECORDS:
            out_paces.append(ends)
            out_starts.append(min(starts[k], mine["ts"].min()) if k else starts[k])
        else:
            out_paces.append(pace)
            out_starts.append(starts[k])
    return out_paces, out_starts


def _whole_steps(ops: pl.DataFrame) -> pl.DataFrame:
    """Per step: its end (latest op end), for the steps with as many ops as a typical step (a trace record
    is written when its op ends: a step still running has fewer)."""
    per = ops.group_by("step").agg(pl.len().alias("n"), pl.col("end").max().alias("end"))
    return per.filter(pl.col("n") >= per["n"].median()).sort("step")


def _new_run_ts(ops: pl.DataFrame, old_last: datetime, new_first: datetime) -> datetime:
    """Where the new run's trace begins: its first op after the old run's last progress whose step number is
    below one already seen (the run went back to its checkpoint), else midway through the restart gap."""
    seen = ops.with_columns(pl.col("step").cum_max().shift(1).alias("before"))
    back = seen.filter((pl.col("ts") > old_last) & (pl.col("step") < pl.col("before")))
    return back["ts"].min() if back.height else old_last + (new_first - old_last) / 2


def _lost_since(
    step_ops: pl.DataFrame | None,
    old: tuple[datetime, datetime],
    new: tuple[datetime, datetime],
    ckpt_s: float,
) -> tuple[datetime, str] | None:
    """From when the old run's work was lost at its end (done again by the next run), and what says so: the
    step trace (the old run's start of the step the new run resumed at), the old run's last checkpoint op,
    or the checkpoint interval from the old run's start; None when nothing does."""
    if step_ops is not None and step_ops.height:
        ops = step_ops.filter((pl.col("ts") >= old[0]) & (pl.col("ts") <= new[1])).sort("ts")
        split = _new_run_ts(ops, old[1], new[0])
        in_old, in_new = ops.filter(pl.col("ts") < split), ops.filter(pl.col("ts") >= split)
        work = in_new.filter(pl.col("op") != "checkpoint")
        if in_old.height and work.height:
            resumed = int(work["step"].min())
            again = in_old.filter(pl.col("step") >= resumed)
            return (again["ts"].min() if again.height else old[1]), "step_ops"
        ckpt = in_old.filter(pl.col("op") == "checkpoint")
        if ckpt.height:
            return min(ckpt["end"].max(), old[1]), "checkpoint_op"
    if ckpt_s > 0:
        elapsed = _seconds(old[0], old[1])
        return _at(old[0], (elapsed // ckpt_s) * ckpt_s), "checkpoint_interval"
    return None


def _attribute(p: Piece, spans: list[FaultSpan]) -> Piece:
    if p.kind == "productive" or p.attributed:
        return p
    return replace(p, fault=_covering(spans, p.start, p.end))


def _merge(pieces: list[Piece], period: float) -> list[Piece]:
    """Adjacent pieces of one cause merged; short productive stretches between two slowed pieces of one cause
    absorbed into them (``pieces`` are consumed: merged in place)."""
    key = lambda p: (p.kind, p.run, p.basis, p.fault.fault_id if p.fault else "")  # noqa: E731
    out: list[Piece] = []
    for p in pieces:
        if out and key(out[-1]) == key(p) and out[-1].end == p.start:
            out[-1].end, out[-1].lost_s = p.end, out[-1].lost_s + p.lost_s
        elif (
            len(out) >= 2
            and p.kind == "slowed"
            and out[-1].kind == "productive"
            and out[-1].wall_s <= MERGE_PERIODS * period
            and key(out[-2]) == key(p)
            and out[-2].end == out[-1].start
            and out[-1].end == p.start
        ):
            out.pop()
            out[-1].end, out[-1].lost_s = p.end, out[-1].lost_s + p.lost_s
        else:
            out.append(p)
    return out


def _gpus(colls: pl.DataFrame, comms: set[str]) -> int:
    """The run's GPUs: ranks of its largest communicator (distinct (node, rank), or its size when larger)."""
    c = colls.filter(pl.col("comm_id").is_in(list(comms)))
    if c.is_empty():
        return 0
    host = "node" if "node" in c.columns else ("hostname" if "hostname" in c.columns else None)
    ident = pl.struct(host, "rank") if host else pl.col("rank")
    aggs = [ident.n_unique().alias("n")]
    if "n_ranks" in c.columns:
        aggs.append(pl.col("n_ranks").max().alias("size"))
    per = c.group_by("comm_id").agg(aggs)
    best = int(per["n"].max())
    if "size" in per.columns and per["size"].max() is not None:
        best = max(best, int(per["size"].max()))
    return best


def account_job(
    job: str,
    colls: pl.DataFrame,
    now: datetime,
    faults: pl.DataFrame | None = None,
    restarts: list[tuple[datetime, str]] | None = None,
    step_ops: pl.DataFrame | None = None,
    checkpoint_interval_s: float = 0.0,
    computed_at: datetime | None = None,
    comm_gpus: dict[str, int] | None = None,
    alive_until: datetime | None = None,
    comm_procs: dict[str, set[str]] | None = None,
) -> JobAccount:
    """The account of one job (see the module's docstring for every definition).

    ``colls``: the job's nccl_collectives rows (ts, comm_id, rank, coll_sn; node or hostname and n_ranks
    when present, for its GPU count). ``faults``: the job's faults (fault_id, fault_class, component,
    first_seen, last_seen, resolved_at). ``restarts``: (ts, fault_id) of C4's restart commands that ran.
    ``step_ops``: the job's step trace rows (ts, step, op, end: the op's end as a timestamp), or None.
    ``checkpoint_interval_s``: the job's checkpoint interval when known (0: unknown). ``comm_gpus``:
    comm_id -> its GPUs, when the caller counted them (``colls`` may then hold the lowest ranks only).
    ``alive_until``: when the job's processes were last seen on their GPUs (NVML's compute processes), for
    a silence at the end that no fault covers: hung while they were, else the job's end. ``comm_procs``:
    comm_id -> its ranks' processes (host/pid): a run's GPUs are then its communicators' processes together
    (a TP x PP job has no communicator of every rank), or its largest communicator when that is more.
    """
    acc = JobAccount(job)
    if colls.is_empty():
        acc.outcome = "no_records"
        return acc
    spans = fault_spans(faults if faults is not None else pl.DataFrame(), now)
    by_id = {s.fault_id: s for s in spans}
    commands = sorted(restarts or [])
    segs = _segments(colls, acc.skipped_by_reason)
    if segs.is_empty():
        acc.outcome = "no_records"
        return acc
    runs = _runs(segs)
    paces = [_pace(segs, r) for r in runs]
    starts = [segs.filter(pl.col("seg").is_in(r))["t"].min() for r in runs]
    if step_ops is not None and step_ops.height:
        paces, starts = _step_paces(step_ops, paces, starts)
    learned = _period(paces, spans)
    if learned is None:
        acc.outcome = "no_period"
        acc.skipped_by_reason["no_period"] = 1
        return acc
    period, spread = learned
    acc.period_s, acc.runs = period, len(runs)
    slow_at = period * (1 + MIN_SLOW_FRAC) + SLOW_MADS * spread
    pieces: list[Piece] = []
    for k, pace in enumerate(paces):
        begin = pace[0] if k == 0 else starts[k]
        run_pieces = _iterations(pace, begin, k, period, slow_at)
        if k > 0:  # the restart gap, then what the new run did again
            pieces += _silence(paces[k - 1][-1], begin, k, commands, by_id, "restarting")
            restart_fault = _covering(spans, paces[k - 1][-1], begin)
            for p in pieces[-2:]:
                if p.kind == "restarting" and p.attributed:
                    restart_fault = p.fault
            lost = _lost_since(
                step_ops, (starts[k - 1], paces[k - 1][-1]), (begin, pace[-1]), checkpoint_interval_s
            )
            if lost is None:  # nothing says where the old run checkpointed: say so
                pieces.append(
                    Piece(begin, begin, "redone", 0.0, k - 1, "unknown", restart_fault, attributed=True)
                )
            else:
                pieces = _redo_range(pieces, lost[0], paces[k - 1][-1], lost[1], restart_fault)
        pieces += run_pieces
    tail = paces[-1][-1]
    if _seconds(tail, now) > HANG_PERIODS * period:
        acc.silent_since = tail
        pieces += _open_end(tail, now, len(runs) - 1, period, commands, by_id, spans, alive_until)
    pieces = _merge([_attribute(p, spans) for p in pieces], period)
    comms_of_run = [set(segs.filter(pl.col("seg").is_in(r))["comm_id"].unique().to_list()) for r in runs]
    if comm_gpus is not None:
        gpus_of_run = [max((comm_gpus.get(c, 0) for c in comms), default=0) for comms in comms_of_run]
        if comm_procs is not None:
            together = [
                len(set().union(*(comm_procs.get(c, set()) for c in comms))) for comms in comms_of_run
            ]
            gpus_of_run = [max(a, b) for a, b in zip(gpus_of_run, together, strict=True)]
    else:
        gpus_of_run = [_gpus(colls, comms) for comms in comms_of_run]
    acc.rows = [_row(job, p, gpus_of_run[p.run], computed_at or now) for p in pieces]
    return acc


def _row(job: str, p: Piece, gpus: int, computed_at: datetime) -> dict[str, Any]:
    """A job_accounting row."""
    category = p.kind if p.kind == "productive" or p.fault else "unexplained"
    return {
        "ts": p.start,
        "end_ts": p.end,
        "node": "",
        "job": job,
        "category": category,
        "kind": p.kind,
        "basis": p.basis,
        "wall_s": p.wall_s,
        "lost_s": p.lost_s,
        "gpus": gpus,
        "gpu_hours_lost": p.lost_s * gpus / 3600.0,
        "fault_id": p.fault.fault_id if p.fault else "",
        "fault_class": p.fault.fault_class if p.fault else "",
        "component": p.fault.component if p.fault else "",
        "run": p.run,
        "computed_at": computed_at,
    }
