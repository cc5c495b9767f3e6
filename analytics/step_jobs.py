"""Step-time attribution per job over the diagnosis window: step_ops rows -> complete steps -> A's attribution.

The window cuts steps at both ends, and agents deliver with different lags: only steps every rank of the
job has finished (a later step of every rank is in) and that started after the window did (an earlier step
is in, or the step has all its ops) are analysed.
A job whose trace still breaks a rule that needs several records (a recv without its send) is left out and
logged, never the whole diagnosis.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import polars as pl

from c4.analytics.attribution import JobAttribution, attribute
from c4.analytics.step_trace import TraceError, validate_trace

log = logging.getLogger("c4.analytics.step_jobs")

#: step_ops columns that are not trace columns (the agent's node and the timestamp form of start_s).
STORE_ONLY = ("ts", "node")
#: Text columns the agent stores as '' when the trace leaves them out.
EMPTY_IS_NULL = ("host", "comm")
#: Newest complete steps of a job attributed per pass: medians over 20 steps are steady, and the replay's cost
#: grows with steps (128 ranks x 8 microbatches: 0.4 s for 10 steps, 2.0 s for 40, on one core).
MAX_STEPS = 20
#: A rank starting its current step over after a silence of this many typical steps was relaunched ...
RESTART_STEPS = 5.0
#: ... and of at least this long (a relaunch takes seconds: a process start and a checkpoint load).
RESTART_MIN_GAP_S = 2.0
#: Fewest complete steps a job needs before it is attributed (A's default).
MIN_STEPS = 3


def latest_run(trace: pl.DataFrame) -> pl.DataFrame:
    """Each job's rows from its latest run in the window: a job restarted from a checkpoint does its steps
    since that checkpoint again under the same numbers, and two runs' ops of one step never match.

    A rank's ops follow each other, so its step numbers never fall within a run; a step below the rank's
    previous op's begins a new run. So does the rank doing its current step's first op again after a
    silence of more than ``RESTART_STEPS`` typical steps (at least ``RESTART_MIN_GAP_S``): the run hung in
    the step after its checkpoint and the relaunch starts that step over. The job's latest run begins at
    the earliest such start among its ranks' latest (the old run's ops all ended before the relaunch).
    """
    if trace.is_empty():
        return trace
    if "microbatch" not in trace.columns:
        trace = trace.with_columns(pl.lit(None, dtype=pl.Int32).alias("microbatch"))
    rank = ("job", "rank")
    starts = trace.group_by(*rank, "step").agg(pl.col("start_s").min()).sort("start_s")
    typical = starts.group_by(rank).agg(pl.col("start_s").diff().median().fill_null(0.0).alias("_step_s"))
    t = (
        trace.sort("start_s")
        .join(typical, on=list(rank), how="left")
        .with_columns(
            pl.col("step").shift(1).over(rank).alias("_prev_step"),
            (pl.col("start_s") - (pl.col("start_s") + pl.col("duration_s")).shift(1).over(rank)).alias(
                "_gap_s"
            ),
            pl.col("op").first().over(*rank, "step").alias("_first_op"),
            pl.col("microbatch").first().over(*rank, "step").alias("_first_mb"),
        )
    )
    again = (
        (pl.col("step") == pl.col("_prev_step"))
        & (pl.col("op") == pl.col("_first_op"))
        & pl.col("microbatch").eq_missing(pl.col("_first_mb"))
        & (pl.col("_gap_s") > pl.max_horizontal(pl.lit(RESTART_MIN_GAP_S), RESTART_STEPS * pl.col("_step_s")))
    )
    drops = t.filter((pl.col("step") < pl.col("_prev_step")) | again)
    if drops.is_empty():
        return trace
    since = (
        drops.group_by(rank)
        .agg(pl.col("start_s").max())
        .group_by("job")
        .agg(pl.col("start_s").min().alias("_since"))
    )
    return (
        trace.join(since, on="job", how="left")
        .filter(pl.col("_since").is_null() | (pl.col("start_s") >= pl.col("_since")))
        .drop("_since")
    )


def complete_steps(step_ops: pl.DataFrame, max_steps: int = MAX_STEPS) -> pl.DataFrame:
    """The trace rows of the newest ``max_steps`` steps per job that are whole in the window.

    A step is whole when, for every rank of its job, the rank has rows of a later step, and of an earlier
    step or as many ops as in its next step (the window began before it: a job's first steps count as soon
    as they are done, which is what a cause present from the job's start is detected on).
    """
    if step_ops.is_empty():
        return step_ops
    df = step_ops.drop([c for c in STORE_ONLY if c in step_ops.columns]).with_columns(
        # the store keeps '' for a host or comm the trace did not give: not given means null in a trace
        pl.when(pl.col(c) != "").then(pl.col(c)).alias(c)
        for c in EMPTY_IS_NULL
        if c in step_ops.columns
    )
    df = latest_run(df.unique(maintain_order=True))  # an agent's re-send of the same rows counts once
    per_step = df.group_by("job", "rank", "step").len("ops")
    ranks = (
        per_step.sort("step")
        .group_by("job", "rank")
        .agg(
            pl.col("step").first().alias("first"),
            pl.col("step").last().alias("last"),
            # its first step has as many ops as the next (every step runs the same program): none was cut
            (pl.col("ops").first() == pl.col("ops").get(1, null_on_oob=True)).fill_null(False).alias("whole"),
        )
    )
    bounds = ranks.group_by("job").agg(
        pl.col("first").max().alias("lo"),
        pl.col("last").min().alias("hi"),
        (pl.col("whole") | (pl.col("first") < pl.col("first").max())).all().alias("lo_whole"),
    )
    kept = df.join(bounds, on="job").filter(
        ((pl.col("step") > pl.col("lo")) | ((pl.col("step") == pl.col("lo")) & pl.col("lo_whole")))
        & (pl.col("step") < pl.col("hi"))
    )
    newest = (
        kept.select("job", "step")
        .unique()
        .filter(pl.col("step").rank("dense", descending=True).over("job") <= max_steps)
    )
    return kept.join(newest, on=["job", "step"], how="semi").drop("lo", "hi", "lo_whole")


class AttributionMemo:
    """The last attribution of each job with the fingerprint of the rows it came from.

    Attribution is a pure function of a job's complete-step rows, and the diagnosis runs more often than a
    step completes (every second against steps of seconds): a job whose rows did not change since the last
    pass gets the same answer without the replay.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[tuple[int, int], list[JobAttribution]]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, job: str, rows: pl.DataFrame, min_steps: int) -> list[JobAttribution]:
        """The job's attribution, replayed only when its rows differ from the last call's."""
        key = (rows.height, int(rows.hash_rows(seed=min_steps).sum()))
        last = self._last.get(job)
        if last is not None and last[0] == key:
            self.hits += 1
            return last[1]
        self.misses += 1
        found = attribute(validate_trace(rows, f"step_ops job {job}"), min_steps)
        self._last[job] = (key, found)
        return found

    def keep_only(self, jobs: set[str]) -> None:
        """Forget jobs no longer in the window."""
        for job in set(self._last) - jobs:
            del self._last[job]


def job_attributions(
    step_ops: pl.DataFrame, min_steps: int = MIN_STEPS, memo: AttributionMemo | None = None
) -> list[JobAttribution]:
    """One attribution per job with complete steps in the window; jobs whose trace is invalid are logged and left out.

    ``memo`` (kept by a caller that diagnoses repeatedly) skips the replay of a job whose rows are unchanged.
    """
    trace = complete_steps(step_ops)
    memo = memo or AttributionMemo()
    jobs = sorted(trace["job"].unique().to_list()) if not trace.is_empty() else []
    memo.keep_only(set(jobs))
    out: list[JobAttribution] = []
    for job in jobs:
        try:
            out += memo.get(job, trace.filter(pl.col("job") == job), min_steps)
        except TraceError as exc:
            log.warning("step trace of a job left out of attribution job=%s error=%s", job, exc)
    return out


def attribution_rows(found: list[JobAttribution], now: datetime) -> list[dict[str, Any]]:
    """step_attribution rows: a ``job`` row per job and one per worker, stage and op with its cost."""
    rows: list[dict[str, Any]] = []
    for a in found:
        totals = {
            "ts": now,
            "node": "",
            "job": a.job,
            "steps": a.steps,
            "actual_step_s": a.actual_step_s,
            "ideal_step_s": a.ideal_step_s,
            "slowdown_frac": a.slowdown_frac,
        }
        rows.append({**totals, "scope": "job", "part": ""})
        for w in a.by_worker:
            ids = {k: w.get(k) for k in ("rank", "dp_rank", "pp_stage", "tp_rank")}
            rows.append({**totals, **ids, "scope": "worker", "part": f"rank{w['rank']}", **_cost(w)})
        for s in a.by_stage:
            rows.append(
                {
                    **totals,
                    "scope": "stage",
                    "part": f"stage{s['pp_stage']}",
                    "pp_stage": s["pp_stage"],
                    **_cost(s),
                }
            )
        for o in a.by_op:
            rows.append({**totals, "scope": "op", "part": o["op"], "op": o["op"], **_cost(o)})
    return rows


def _cost(part: dict[str, Any]) -> dict[str, Any]:
    return {"cost_s": part.get("cost_s"), "share": part.get("share")}
