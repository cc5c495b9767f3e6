"""Iteration periods learned from the data, per job and communicator (each has its own sequence and pace)."""

from __future__ import annotations

import polars as pl

from c4.analytics.jobs import with_job

_SCHEMA = {
    "job": pl.String,
    "comm_id": pl.String,
    "period_s": pl.Float64,
    "last_ts": pl.Datetime("us"),
    "last_sn": pl.Int64,
}


def comm_periods(colls: pl.DataFrame, min_records: int = 4) -> pl.DataFrame:
    """Per (job, comm_id): the median time between consecutive records of its lowest rank (``period_s``,
    null with fewer than ``min_records`` records), and its newest record's ts and sequence number."""
    if colls.is_empty():
        return pl.DataFrame(schema=_SCHEMA)
    c = with_job(colls)
    lowest = c.filter(pl.col("rank") == pl.col("rank").min().over(["job", "comm_id"])).sort("ts")
    gaps = (pl.col("ts").diff().dt.total_microseconds() / 1e6).over(["job", "comm_id"])
    periods = (
        lowest.with_columns(gaps.alias("gap_s"))
        .group_by(["job", "comm_id"])
        .agg(
            pl.col("gap_s").filter(pl.col("gap_s") > 0).median().alias("period_s"),
            pl.len().alias("n"),
        )
        .with_columns(pl.when(pl.col("n") >= min_records).then(pl.col("period_s")).alias("period_s"))
    )
    newest = c.group_by(["job", "comm_id"]).agg(
        pl.col("ts").max().alias("last_ts"),
        pl.col("coll_sn").get(pl.col("ts").arg_max()).cast(pl.Int64).alias("last_sn"),
    )
    return (
        periods.join(newest, on=["job", "comm_id"])
        .select(list(_SCHEMA))
        .cast({"last_ts": pl.Datetime("us"), "period_s": pl.Float64})
        .sort(["job", "comm_id"])
    )


def job_periods(colls: pl.DataFrame, periods: pl.DataFrame | None = None) -> dict[str, float]:
    """Per job, its iteration period: the longest of its communicators' periods (the communicator that
    runs once per iteration, e.g. data parallel's gradient reduction, sets the pace; tensor-parallel
    groups run many collectives per iteration). ``periods``: comm_periods(colls), when already known."""
    p = (comm_periods(colls) if periods is None else periods).drop_nulls("period_s")
    return {job: float(s) for job, s in p.group_by("job").agg(pl.col("period_s").max()).rows()}


def iteration_period_s(colls: pl.DataFrame, periods: pl.DataFrame | None = None) -> float | None:
    """The iteration period of the window's jobs (the longest, when several run): learned from the data."""
    per_job = job_periods(colls, periods)
    return max(per_job.values()) if per_job else None
