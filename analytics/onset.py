"""When a finding's signal appeared: the first anomalous sample of a component, for its fault's first_seen.

A detector looks at a whole window of samples; the fault began at the first sample it bases the
finding on (a counter's rise, a state that has held since), never at the window's start.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl


def _rise(df: pl.DataFrame, per: list[str], counters: list[str]) -> pl.DataFrame:
    """``df`` by time with ``rise``: how much ``counters`` (summed) rose since each ``per`` group's first
    sample in the window, counting only increases (a counter reset is not a rise)."""
    step = sum(pl.col(c).diff().over(per).clip(lower_bound=0).fill_null(0) for c in counters)
    return (
        df.sort("ts")
        .with_columns(step.alias("_step"))
        .with_columns(pl.col("_step").cum_sum().over(per).alias("rise"))
    )


def rise_onsets(
    df: pl.DataFrame, keys: list[str], counters: list[str], baseline: float, per: list[str] | None = None
) -> dict[tuple, datetime]:
    """Per component (``keys``), the ts of its first sample by which ``counters`` had risen by ``baseline``
    (and at all) in the window: when the signal appeared. ``per``: finer series summed into a component
    (e.g. its links). Components that never rose that much are absent."""
    per = per or keys
    rises = _rise(df, per, counters)
    if per != keys:
        rises = rises.group_by([*keys, "ts"]).agg(pl.col("rise").sum())
    first = (
        rises.filter((pl.col("rise") >= baseline) & (pl.col("rise") > 0))
        .group_by(keys)
        .agg(pl.col("ts").min())
    )
    return {tuple(row[:-1]): row[-1] for row in first.iter_rows()}


def trailing_onsets(df: pl.DataFrame, keys: list[str], holds: pl.Expr) -> dict[tuple, datetime]:
    """Per component (``keys``) whose newest sample satisfies ``holds``: the ts of the first sample of the
    trailing run where it held (the window's first sample of that component if it held throughout)."""
    ok_ts = pl.col("ts").filter(~pl.col("_holds")).max()  # the newest sample where it did not hold
    runs = (
        df.sort("ts")
        .with_columns(holds.fill_null(False).alias("_holds"))
        .group_by(keys)
        .agg(
            pl.col("_holds").last().alias("now"),
            pl.col("ts").filter(pl.col("ts") > ok_ts.fill_null(pl.datetime(1970, 1, 1))).min().alias("onset"),
        )
    )
    return {tuple(row[:-2]): row[-1] for row in runs.filter(pl.col("now")).iter_rows()}
