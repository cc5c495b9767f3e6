"""Rollup tables, generated from the catalogue: per entity key and 1-minute or 1-hour bucket, the min,
mean, max and last of every numeric gauge and of every counter's per-second rate, with the counts
that let buckets combine exactly.

A table declares ``rollup = true`` in its TOML; ``<table>_1m`` and ``<table>_1h`` are then generated
here (DDL and docs through the ordinary ``TableSpec``), and the collector fills them
(``c4.collector.rollup``). Column naming, for a gauge ``g`` and a counter ``c``:

- ``g_min``, ``g_mean``, ``g_max``, ``g_last`` (DOUBLE) and ``g_n`` (non-NULL samples);
- ``c_rate_min``, ``c_rate_mean``, ``c_rate_max``, ``c_rate_last`` (DOUBLE, unit/s) and ``c_rate_n``:
  the per-sample rates of the ``<table>_rate`` view (reset- and wrap-aware);
- ``c_increase`` (the counter's increase, in its unit) and ``c_span_s`` (the seconds that increase
  covers): ``sum(c_increase) / sum(c_span_s)`` is the time-weighted rate ("bytes moved / seconds");
- ``samples``: raw rows in the bucket.

What "the same numbers as the raw data" means, per bucket and entity (and so for any union of buckets):
min/max/last are those of the raw values (of the rate view's per-sample rates for a counter);
``mean`` is the mean of the non-NULL raw values, each sample weighted once (combine with
``sum(mean * n) / sum(n)``); ``increase`` and ``span_s`` are sums over the samples whose rate is not NULL.
A sample's rate belongs to the bucket the sample falls in, even though it covers time since the previous one.
"""

from __future__ import annotations

from c4.catalogue import ColumnSpec, TableSpec

#: Resolution name -> bucket width in seconds.
RESOLUTIONS_S: dict[str, int] = {"1m": 60, "1h": 3600}
#: The statistics kept per value.
STATS = ("min", "mean", "max", "last")
#: Catalogue types a gauge may have to be rolled up (labels and strings are not).
NUMERIC_TYPES = ("INTEGER", "BIGINT", "UBIGINT", "DOUBLE")


def rollup_name(table: str, resolution: str) -> str:
    """The name of ``table``'s rollup at ``resolution`` (``1m`` or ``1h``)."""
    return f"{table}_{resolution}"


def rolled_gauges(spec: TableSpec) -> list[ColumnSpec]:
    """The gauges of ``spec`` a rollup keeps statistics of (the numeric ones, and the labels of ``rollup_stats``)."""
    return [
        c
        for c in spec.columns
        if (c.kind == "gauge" or c.name in spec.rollup_stats) and c.type in NUMERIC_TYPES and not c.list
    ]


def rollup_keys(spec: TableSpec) -> tuple[str, ...]:
    """What a rollup row is per: the table's keys, then the labels of its ``rollup_by``."""
    return (*spec.keys, *(k for k in spec.rollup_by if k not in spec.keys))


def _col(name: str, ctype: str, unit: str, help_: str) -> ColumnSpec:
    return ColumnSpec(name, ctype, unit, "gauge", help_)


def rollup_spec(spec: TableSpec, resolution: str) -> TableSpec:
    """The generated rollup table of ``spec`` at ``resolution``."""
    width_s = RESOLUTIONS_S[resolution]
    by_name = {c.name: c for c in spec.columns}
    cols: list[ColumnSpec] = [
        ColumnSpec("ts", "TIMESTAMP", "UTC", "time", f"Start of the {resolution} bucket (UTC)."),
    ]
    cols += [by_name[k] for k in rollup_keys(spec)]
    cols.append(_col("samples", "BIGINT", "rows", "Raw rows in the bucket."))
    for g in rolled_gauges(spec):
        for stat in STATS:
            cols.append(_col(f"{g.name}_{stat}", "DOUBLE", g.unit, f"{stat} of `{g.name}` in the bucket."))
        cols.append(_col(f"{g.name}_n", "BIGINT", "samples", f"Samples with `{g.name}` not NULL."))
    for c in spec.counters:
        unit = f"{c.unit or 'units'}/s"
        for stat in STATS:
            cols.append(
                _col(f"{c.name}_rate_{stat}", "DOUBLE", unit, f"{stat} of the per-sample rate of `{c.name}`.")
            )
        cols.append(_col(f"{c.name}_rate_n", "BIGINT", "samples", f"Samples with a rate of `{c.name}`."))
        cols.append(
            _col(
                f"{c.name}_increase", "DOUBLE", c.unit, f"Increase of `{c.name}` (resets and wraps handled)."
            )
        )
        cols.append(_col(f"{c.name}_span_s", "DOUBLE", "s", f"Seconds the increase of `{c.name}` covers."))
    return TableSpec(
        name=rollup_name(spec.name, resolution),
        help=(
            f"`{spec.name}` rolled up per {resolution} ({width_s} s) and entity, generated from the catalogue "
            "and kept by the collector (c4/catalogue/rollup.py explains the columns)."
        ),
        version=1,
        keys=rollup_keys(spec),
        columns=tuple(cols),
        source=spec.source,
        retention=False,  # the collector keeps each resolution for its own time (rollup_*_retention_s)
        time_column="ts",
        extra={"rollup_of": spec.name, "resolution": resolution, "resolution_s": width_s},
        writer="collector",
    )


def rollup_specs(spec: TableSpec) -> list[TableSpec]:
    """Every rollup table of ``spec``, finest first."""
    return [rollup_spec(spec, r) for r in RESOLUTIONS_S]
