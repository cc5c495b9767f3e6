"""The collector's rollups: 1-minute buckets from the raw rows, 1-hour buckets from the minutes.

Which tables roll up, and the columns, come from the catalogue (``c4.catalogue.rollup``). Each run,
per table and resolution:

1. **Plan** (a reader cursor, beside ingest): the buckets from the newest rolled bucket (itself
   included), or from ``recheck_s`` ago if that is earlier, up to the newest *closed* bucket (at most
   ``MAX_BUCKETS_PER_RUN`` of them, so a week's backlog is caught up a slice per run). In that range
   the raw rows per bucket are counted against the rollup's ``samples``; a bucket whose count differs
   (new, or a late row arrived) is rolled again, with the bucket after it (a late row changes the rate
   of the next sample, which may fall there).
2. **Compute** (the same reader cursor): the aggregates of that contiguous range of buckets; per-sample
   rates as the ``_rate`` view counts them (``sample_rates``), from the raw rows starting
   ``RATE_LOOKBACK_S`` earlier so the first sample's rate is that of the view.
3. **Replace** (the writer thread): delete the range's rollup rows, insert the new ones, in writer jobs
   of ``WRITE_PART_BYTES`` each (``Slice.writes``; ingest's commits go in between), buckets in time
   order. There is no separate watermark: what is rolled is read back from the rollup table itself. A
   crash before the first job leaves the range as it was; one between two jobs leaves a bucket with
   fewer ``samples`` than raw rows, which the next plan (from the newest rolled bucket on) rolls
   again; no bucket is lost or counted twice. (``roll_all`` writes a slice in one transaction.)

Hour buckets are rolled from the minute rollup (never the raw rows, which expire first) and only
once every minute of the hour is rolled.

With ``lake`` (scale-out) the lease holder alone rolls up (``c4.collector.tasks.LeaderTasks``), from
every shard's rows into the lake's rollup tables, which only it writes: its replaces conflict with no
shard's commit, and a bucket a shard's late rows change is rolled again as above.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from c4.catalogue import Catalogue, TableSpec
from c4.catalogue.rollup import RESOLUTIONS_S, STATS, rolled_gauges, rollup_keys, rollup_name
from c4.collector.rollup_lookback import scalar_lookback_sql, wide_lookback_sql
from c4.collector.rollup_lookback import timestamp_sql as _lit
from c4.collector.rollup_matrix import counter_delta, matrix_minute_rows, matrix_stats, rate_summary
from c4.collector.rollup_wide import element_samples
from c4.collector.thread_priority import lower_thread_priority
from c4.sql_text import quote_name as _q
from c4.thread_names import name_os_thread

log = logging.getLogger("c4.collector.rollup")

#: A sample's rate needs the counter's previous reading: the compute starts this many seconds before its
#: first bucket. Slow NIC counters are read every 10 s. After a gap longer than this (an agent down, a
#: counter read less often) the first sample's rate is NULL in the rollup where the ``_rate`` view has one
#: over the whole gap. Of the look-back only each entity's last readings are read
#: (``c4.collector.rollup_lookback``): reading all of it doubled what each minute rolled read.
RATE_LOOKBACK_S = 60.0
#: At most this many buckets per table and resolution per run (6 hours of minutes, a week of hours): a
#: long backlog (first start on an old store, a collector down for days) is caught up slice by slice.
MAX_BUCKETS_PER_RUN = {"1m": 360, "1h": 168}
#: A slice also stops at this many source rows (whole buckets, at least one): one is held in memory as Arrow
#: and numpy arrays, ~0.5 KB a row for ib_port_samples, so a backlog of a 2,000-node cluster is rolled in
#: slices of ~1 GB rather than all at once.
MAX_ROWS_PER_SLICE = 2_000_000
STAGING = "_c4_rollup_in"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def floor_to(dt: datetime, width_s: int) -> datetime:
    """``dt`` rounded down to a multiple of ``width_s`` seconds since the epoch (time_bucket's grid)."""
    epoch_s = int(dt.replace(tzinfo=UTC).timestamp())
    return datetime.fromtimestamp(epoch_s - epoch_s % width_s, UTC).replace(tzinfo=None)


def raw_sql(
    spec: TableSpec,
    start: datetime,
    end: datetime,
    stored: TableSpec | None = None,
    lookback_cut: bool = True,
) -> str:
    """The raw rows the minute buckets in [start, end) need, in entity and time order: of the look-back only
    the rows the first rates need (``c4.collector.rollup_lookback``; ``lookback_cut`` False: all of them).

    For a wide table's per-element view (``stored``: the wide table) the rows come from the catalogue's
    bounded element SELECT (``element_window_sql``): the same rows as the view, on-change counters filled,
    reading the window and one keyframe period before it, never the whole table.
    """
    t = _q(spec.time_column or "ts")
    keys = ", ".join(_q(k) for k in rollup_keys(spec))
    cols = [_q(g.name) for g in rolled_gauges(spec)] + [_q(c.name) for c in spec.counters]
    lookback = start - timedelta(seconds=RATE_LOOKBACK_S)
    source = _q(spec.name)
    if stored is not None:
        bounded = stored.element_window_sql()
        bounded = bounded.replace("$start", f"'{lookback.isoformat(sep=' ')}'").replace(
            "$end", f"'{end.isoformat(sep=' ')}'"
        )
        source = f"({bounded})"
        return (
            f"SELECT {t} AS ts, {keys}{''.join(', ' + c for c in cols)} FROM {source} "
            f"WHERE {t} >= {_lit(lookback)} AND {t} < {_lit(end)} ORDER BY {keys}, {t}"
        )
    select = [f"{t} AS ts", *map(_q, rollup_keys(spec)), *cols]
    before = scalar_lookback_sql(
        spec.name,
        spec.time_column or "ts",
        list(rollup_keys(spec)),
        select,
        [c.name for c in spec.counters],
        lookback,
        start,
        lookback_cut,
    )
    return (
        f"SELECT {', '.join(select)} FROM {source} WHERE {t} >= {_lit(start)} AND {t} < {_lit(end)} "
        f"UNION ALL {before} ORDER BY {keys}, ts"
    )


def entity_starts(rows: pa.Table, keys: tuple[str, ...]) -> np.ndarray:
    """True where a row's entity (its key values) differs from the row before's."""
    n = rows.num_rows
    new = np.zeros(n, dtype=bool)
    if n:
        new[0] = True
    for k in keys:
        col = rows.column(k).combine_chunks()
        if n > 1:
            a, b = col.slice(1), col.slice(0, n - 1)
            differs = pc.fill_null(pc.not_equal(a, b), True)
            both_null = pc.and_(pc.is_null(a), pc.is_null(b))
            new[1:] |= np.asarray(pc.and_not(differs, both_null))
    return new


def _float(col: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64 with NaN for NULL."""
    return col.cast(pa.float64()).to_numpy(zero_copy_only=False)


def entity_starts_at(new_entity: np.ndarray) -> np.ndarray:
    """For each sample, the index of its entity's first sample (``new_entity`` True there)."""
    index = np.arange(len(new_entity))
    return np.maximum.accumulate(np.where(new_entity, index, 0)) if len(index) else index


def counter_rates(
    ts_us: np.ndarray,
    entity_start: np.ndarray,
    values: np.ndarray,
    valid: np.ndarray,
    wrap_bits: int,
    at: np.ndarray | None = None,
    shared: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sample's increase since the counter's last valid reading of the same entity, the seconds between
    them and their ratio, as the ``_rate`` view computes them (NaN where the view has NULL), for the samples
    ``at`` (indexes; None: all). Samples are in entity and time order; ``entity_start`` is
    ``entity_starts_at`` of them.

    ``shared``: a dict kept across the counters of the same samples (and ``at``). What depends only on the
    samples' times is computed once there for every counter read in every sample, and a counter whose
    readings are all one value (most error counters, most of the time) gets the one all-zero result
    computed for the first such counter: the same arrays, which ``bucket_table`` also summarises once."""
    n = len(ts_us)
    index = np.arange(n)
    at = index if at is None else at
    every = bool(n) and bool(valid.all())
    readings = values if every else values[valid]
    steady = bool(len(readings)) and bool((readings == readings[0]).all())
    cache = shared if shared is not None and every else None
    if cache is not None and steady and "zero" in cache:
        return cache["zero"]
    if cache is not None and "times" in cache:
        before, dt, ok = cache["times"]
    else:
        if every:  # every reading there (the common case): the previous sample is the one before
            before = at - 1
            has = before >= entity_start[at]
        else:
            last_valid = np.maximum.accumulate(np.where(valid, index, -1)) if n else index
            before = np.where(at > 0, last_valid[np.maximum(at - 1, 0)], -1)
            has = valid[at] & (before >= entity_start[at])
        before = np.where(has, before, at)
        with np.errstate(invalid="ignore", divide="ignore"):
            dt = (ts_us[at] - ts_us[before]) / 1e6
            ok = has & (dt != 0)
            dt = np.where(ok, dt, np.nan)
        if cache is not None:
            cache["times"] = (before, dt, ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        if steady:  # no reading differs from another: every increase is 0
            inc = np.where(ok, 0.0, np.nan)
        else:
            inc = np.where(ok, counter_delta(values[at], values[before], wrap_bits), np.nan)
        rate = inc / dt
    if cache is not None and steady:
        cache["zero"] = (inc, dt, rate)
    return inc, dt, rate


def sample_rates(
    rows: pa.Table,
    spec: TableSpec,
    new_entity: np.ndarray | None = None,
    at: np.ndarray | None = None,
    ts_us: np.ndarray | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """Per counter: each sample's increase since the counter's last reading of the same entity, the seconds
    between them and their ratio, as the catalogue's ``_rate`` view computes them (NaN where the view has
    NULL; None for a counter NULL in every row), for the rows ``at`` (indexes; None: all). ``rows`` are in
    entity and time order (``raw_sql``); ``new_entity`` (their ``entity_starts``) and ``ts_us`` (their
    times, µs) when already known.

    Vectorised here rather than with DuckDB window functions: those cost ~40 us per row for a 45-counter
    table (ib_port_samples), too slow to keep up with 2,000 nodes beside ingest on 2 cores.
    """
    n = rows.num_rows
    if new_entity is None:
        new_entity = entity_starts(rows, spec.keys)
    entity_start = entity_starts_at(new_entity)
    if ts_us is None:
        ts_us = rows.column("ts").cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}
    shared: dict = {}  # what every counter read in every row has in common (counter_rates)
    for c in spec.counters:
        col = rows.column(c.name).combine_chunks()
        if col.null_count == n:  # not read at all (a counter this NIC or GPU lacks): nothing to compute
            out[c.name] = None
            continue
        valid = ~np.asarray(col.is_null()) if col.null_count else np.ones(n, dtype=bool)
        values = col.fill_null(0).to_numpy(zero_copy_only=False)
        out[c.name] = counter_rates(ts_us, entity_start, values, valid, c.wrap_bits, at, shared)
    return out


def minute_rows(
    rows: pa.Table,
    spec: TableSpec,
    start: datetime,
    width_s: int,
    target: TableSpec,
    new_entity: np.ndarray | None = None,
) -> pa.Table:
    """The rollup rows of raw ``rows`` (entity and time order) in buckets from ``start`` on, vectorised;
    ``new_entity``: their ``entity_starts`` when already known."""
    ts_us = rows.column("ts").cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
    keep = ts_us >= epoch_us(start)  # the look-back's rows only give the first rates
    rates = sample_rates(rows, spec, new_entity, np.flatnonzero(keep), ts_us)
    rows, ts_us = rows.filter(pa.array(keep)), ts_us[keep]
    n = rows.num_rows
    gauges = {}
    for g in rolled_gauges(spec):
        col = rows.column(g.name)
        gauges[g.name] = None if col.null_count == n else _float(col)
    return bucket_table(
        ts_us,
        entity_starts(rows, rollup_keys(spec)),
        lambda at: {k: rows.column(k).take(pa.array(at)) for k in rollup_keys(spec)},
        gauges,
        rates,
        width_s,
        target,
    )


def epoch_us(dt: datetime) -> int:
    """``dt`` (naive UTC, whole seconds) in microseconds since the epoch."""
    return int(dt.replace(tzinfo=UTC).timestamp()) * 1_000_000


def bucket_table(
    ts_us: np.ndarray,
    new_group: np.ndarray,
    keys_at,
    gauges: dict[str, np.ndarray | None],
    rates: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray] | None],
    width_s: int,
    target: TableSpec,
) -> pa.Table:
    """The rollup rows of samples in group (rollup key) and time order, all in the rolled buckets.

    ``new_group`` is True at each group's first sample, ``keys_at(indexes)`` gives the key columns of those
    samples, ``gauges`` each gauge as float64 (NaN = NULL; None: NULL throughout) and ``rates`` each
    counter's ``counter_rates`` (None: NULL throughout).
    """
    n = len(ts_us)
    if not n:
        return target.arrow_schema.empty_table()
    width_us = width_s * 1_000_000
    bucket = ts_us // width_us
    new = new_group.copy()
    new[0] = True
    new[1:] |= bucket[1:] != bucket[:-1]
    starts = np.flatnonzero(new)
    cols: dict[str, object] = {
        "ts": pa.array(bucket[starts] * width_us, pa.int64()).cast(pa.timestamp("us")),
        "samples": np.diff(np.append(starts, n)),
    }
    cols.update(keys_at(starts))
    nothing = {stat: np.full(len(starts), np.nan) for stat in STATS} | {"n": np.zeros(len(starts), np.int64)}
    # id of a rates tuple several counters share (counter_rates; ``rates`` holds it) -> its columns
    summarised: dict[int, tuple] = {}
    for name, values in gauges.items():
        stats = (
            nothing if values is None else {s: a[0] for s, a in matrix_stats(values[None, :], starts).items()}
        )
        for stat, arr in stats.items():
            cols[f"{name}_{stat}"] = arr
    for name, rate_of in rates.items():
        if rate_of is None:
            for stat, arr in nothing.items():
                cols[f"{name}_rate_{stat}"] = arr
            cols[f"{name}_increase"] = cols[f"{name}_span_s"] = nothing["min"]
            continue
        if id(rate_of) not in summarised:  # counters whose readings never changed share one (counter_rates)
            summarised[id(rate_of)] = rate_summary(*rate_of, starts, (1, len(starts)))
        stats, increase, span_s = summarised[id(rate_of)]
        for stat, arr in stats.items():
            cols[f"{name}_rate_{stat}"] = arr
        cols[f"{name}_increase"] = increase
        cols[f"{name}_span_s"] = span_s
    return table_of(cols, target)


def table_of(cols: dict[str, object] | None, target: TableSpec) -> pa.Table:
    """The rollup table of computed columns (numpy float arrays: NaN = NULL); None: no rows."""
    if cols is None:
        return target.arrow_schema.empty_table()
    arrays = []
    for f in target.arrow_schema:
        v = cols[f.name]
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            arrays.append(pa.array(v, f.type, mask=np.isnan(v)))
        else:
            arrays.append(pa.array(v, f.type) if isinstance(v, np.ndarray) else v.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=target.arrow_schema)


def view_minute_rows(
    cur,
    spec: TableSpec,
    start: datetime,
    end: datetime,
    width_s: int,
    target: TableSpec,
    stored=None,
    lookback_cut: bool = True,
) -> pa.Table:
    """The rollup rows of the buckets in [start, end) from the raw rows (for a wide table, from the rows of
    its bounded per-element SELECT: the reference the wide path is checked against, and its fallback).

    The rows stream from DuckDB in entity order and are computed a few hundred whole entities at a time
    (``ROWS_PER_CHUNK``): on this 2-core VM a fresh process's first pass over a minute of 2,000 nodes'
    ``gpu_samples`` (1.9 M rows with the look-back) as one table took 2.2-3.3 s, 1.2-2.2 s of it in the
    kernel faulting in fresh pages for each full-length array; in chunks, whose arrays are small and their
    memory reused, 1.5-1.9 s (``c4 bench rollup``)."""
    reader = cur.execute(raw_sql(spec, start, end, stored, lookback_cut)).to_arrow_reader(ROWS_PER_CHUNK)
    chunks = entity_chunks(reader, spec.keys, ROWS_PER_CHUNK)
    parts = [minute_rows(rows, spec, start, width_s, target, new) for rows, new in chunks]
    return pa.concat_tables(parts) if parts else target.arrow_schema.empty_table()


#: Raw rows computed at a time (whole entities, at least one): 50k rows of a 45-counter table are ~20 MB.
ROWS_PER_CHUNK = 50_000
#: Wide rows: 5,000 rows of an 18-link table are ~180k per-link samples with the look-back (~40 MB of numpy
#: arrays). A minute of 2,000 nodes' NVLink took 5.6-6.5 s of CPU in chunks of 5,000 against 6.7-8.2 s in
#: chunks of 20,000 (two load runs' stores, alternating on each; ``c4 bench rollup`` prints both).
WIDE_ROWS_PER_CHUNK = 5_000
#: Wide rows whose layout allows it are computed as matrices (rows x elements; ``c4.collector.rollup_matrix``)
#: rather than flattened to per-element samples (``c4.collector.rollup_wide``); False: always flattened.
MATRIX_PATH = True


def entity_chunks(reader, keys: tuple[str, ...], rows_per_chunk: int):
    """Tables of whole entities (rows with the same ``keys``, which ``reader`` gives in entity order), each of
    about ``rows_per_chunk`` rows or one entity, with ``entity_starts`` of its rows; ``reader`` is read as
    the chunks are taken, never all at once."""
    held: list[pa.RecordBatch] = []
    held_rows = 0
    for batch in itertools.chain(reader, [None]):
        if batch is not None:
            held.append(batch)
            held_rows += batch.num_rows
            if held_rows < rows_per_chunk:
                continue
        if not held_rows:
            return
        rows = pa.Table.from_batches(held).combine_chunks()
        new_entity = entity_starts(rows, keys)
        cut = rows.num_rows
        if batch is not None:  # the last entity may go on in the next batch: keep it for the next chunk
            cut = int(np.flatnonzero(new_entity)[-1])
            if cut == 0:  # one entity so far: read on
                continue
        yield rows.slice(0, cut), new_entity[:cut]
        held = rows.slice(cut).to_batches()
        held_rows = rows.num_rows - cut


def wide_sql(
    spec: TableSpec, stored: TableSpec, start: datetime, end: datetime, lookback_cut: bool = True
) -> str:
    """The wide rows the minute buckets in [start, end) of ``stored``'s per-element view need, in entity and
    time order, and of each only the columns needed: every column from ``start``; the counters from
    ``RATE_LOOKBACK_S`` before it (the first sample's rate); the on-change counters one ``keyframe_within_s``
    before that, from the rows that carry one (where a NULL list is filled from)."""
    el = stored.element
    t = _q(stored.time_column or "ts")
    keys = ", ".join(_q(k) for k in stored.keys)
    lookback = start - timedelta(seconds=RATE_LOOKBACK_S)
    fill_from = lookback - timedelta(seconds=el.keyframe_within_s)
    by_name = {c.name: c for c in stored.columns}
    counters = {c.name for c in spec.counters}
    head = f"{t} AS ts, {keys}, {_q(el.key)}"
    now_cols, before_cols = [], []
    for n in wide_columns(spec):
        now_cols.append(_q(n))
        if by_name[n].on_change:
            before_cols.append(_q(n))
        elif n in counters:
            before_cols.append(f"CASE WHEN {t} >= {_lit(lookback)} THEN {_q(n)} END AS {_q(n)}")
        else:  # a gauge: only its samples in the buckets count
            before_cols.append(f"CAST(NULL AS {by_name[n].sql_type}) AS {_q(n)}")
    before = wide_lookback_sql(
        stored,
        [head, *before_cols],
        [c.name for c in spec.counters],
        lookback,
        fill_from,
        start,
        lookback_cut,
    )
    return (
        f"SELECT {head}, {', '.join(now_cols)} FROM {_q(stored.name)} "
        f"WHERE {t} >= {_lit(start)} AND {t} < {_lit(end)} UNION ALL {before} ORDER BY {keys}, ts"
    )


def wide_columns(spec: TableSpec) -> list[str]:
    """The columns of a per-element view a rollup reads: its rolled gauges, then its counters."""
    return [g.name for g in rolled_gauges(spec)] + [c.name for c in spec.counters]


def wide_minute_rows(
    cur,
    spec: TableSpec,
    stored: TableSpec,
    start: datetime,
    end: datetime,
    width_s: int,
    target: TableSpec,
    lookback_cut: bool = True,
) -> pa.Table | None:
    """The rollup rows of the buckets in [start, end) of a wide table's per-element view ``spec``, computed
    from the wide rows (``c4.collector.rollup_wide``) with the numbers ``view_minute_rows`` gives; None
    where the rows are not regular enough for that (the caller then reads the view).

    The wide rows stream from DuckDB in entity order and are computed a few whole entities at a time
    (``WIDE_ROWS_PER_CHUNK``), so memory stays bounded whatever the slice's size: as links x rows matrices
    (``c4.collector.rollup_matrix``) where the chunk's layout allows, else flattened to per-element samples."""
    if rollup_keys(spec) != spec.keys:  # grouped by more than the element: the view's rows are needed
        return None
    reader = cur.execute(wide_sql(spec, stored, start, end, lookback_cut)).to_arrow_reader(
        WIDE_ROWS_PER_CHUNK
    )
    parts: list[pa.Table] = []
    for rows, new_entity in entity_chunks(reader, stored.keys, WIDE_ROWS_PER_CHUNK):
        part = _wide_chunk(rows, new_entity, spec, stored, start, width_s, target)
        if part is None:
            return None
        parts.append(part)
    return pa.concat_tables(parts) if parts else target.arrow_schema.empty_table()


def _wide_chunk(
    wide: pa.Table,
    new_entity: np.ndarray,
    spec: TableSpec,
    stored: TableSpec,
    start: datetime,
    width_s: int,
    target: TableSpec,
) -> pa.Table | None:
    """``wide_minute_rows`` of whole entities' wide rows."""
    lookback = start - timedelta(seconds=RATE_LOOKBACK_S)
    if MATRIX_PATH:
        gauges = [g.name for g in rolled_gauges(spec)]
        to_table = functools.partial(table_of, target=target)
        args = (gauges, epoch_us(lookback), epoch_us(start), width_s, to_table)
        part = matrix_minute_rows(wide, new_entity, spec, stored, *args)
        if part is not None:
            return part
    samples = element_samples(wide, stored, new_entity, epoch_us(lookback), wide_columns(spec))
    if samples is None:
        return None
    ts_us = samples.ts_us
    entity_start = entity_starts_at(samples.new_element)
    keep = np.flatnonzero(ts_us >= epoch_us(start))  # the look-back's samples only give the first rates
    rates = {}
    shared: dict = {}  # what every counter read in every sample has in common (counter_rates)
    for c in spec.counters:
        values, valid = samples.values[c.name]
        some = valid.any()
        rates[c.name] = (
            counter_rates(ts_us, entity_start, values, valid, c.wrap_bits, keep, shared) if some else None
        )
    element = np.cumsum(samples.new_element)[keep]
    new_group = np.ones(len(element), dtype=bool)
    new_group[1:] = element[1:] != element[:-1]
    rows, key = samples.row[keep], samples.key[keep]
    gauges = {}
    for g in rolled_gauges(spec):
        values, valid = samples.values[g.name]
        values, valid = values[keep], valid[keep]
        if valid.all():  # every sample read (the common case)
            gauges[g.name] = values.astype(np.float64)
        else:
            gauges[g.name] = np.where(valid, values.astype(np.float64), np.nan) if valid.any() else None

    def keys_at(at: np.ndarray) -> dict[str, pa.Array]:
        out = {k: wide.column(k).take(pa.array(rows[at])) for k in stored.keys}
        out[stored.element.key] = pa.array(key[at], samples.key_type)
        return out

    return bucket_table(ts_us[keep], new_group, keys_at, gauges, rates, width_s, target)


def coarser_sql(spec: TableSpec, source: str, start: datetime, end: datetime, width_s: int) -> str:
    """SELECT of ``spec``'s rollup rows for the buckets in [start, end), combined from a finer rollup."""
    keys = ", ".join(_q(k) for k in rollup_keys(spec))
    out = [
        f"time_bucket(INTERVAL '{width_s} seconds', ts) AS ts",
        keys,
        "CAST(sum(samples) AS BIGINT) AS samples",
    ]
    names = [g.name for g in rolled_gauges(spec)] + [f"{c.name}_rate" for c in spec.counters]
    for n in names:
        last = _q(n + "_last")
        out += [
            f"min({_q(n + '_min')}) AS {_q(n + '_min')}",
            f"sum({_q(n + '_mean')} * {_q(n + '_n')}) / nullif(sum({_q(n + '_n')}), 0) AS {_q(n + '_mean')}",
            f"max({_q(n + '_max')}) AS {_q(n + '_max')}",
            f"arg_max({last}, ts) FILTER (WHERE {last} IS NOT NULL) AS {last}",
            f"CAST(sum({_q(n + '_n')}) AS BIGINT) AS {_q(n + '_n')}",
        ]
    for c in spec.counters:
        out += [
            f'sum("{c.name}_increase") AS "{c.name}_increase"',
            f'sum("{c.name}_span_s") AS "{c.name}_span_s"',
        ]
    return f"""
SELECT {", ".join(out)} FROM {_q(source)}
WHERE ts >= {_lit(start)} AND ts < {_lit(end)} GROUP BY ALL"""


@dataclass(frozen=True)
class Step:
    """One rollup to maintain: ``table`` at ``resolution``, read from ``source``."""

    spec: TableSpec  # the rolled-up (raw) rows: a table, or a wide table's per-element view
    resolution: str
    stored: TableSpec | None = None  # the wide table a per-element view's rows are stored in

    @property
    def raw_table(self) -> str:
        """The stored table the raw rows are in (a wide table for a per-element view)."""
        return self.stored.name if self.stored is not None else self.spec.name

    @property
    def raw_count(self) -> str:
        """Aggregate counting raw rows (for a wide table, the elements of its rows: the view's rows)."""
        if self.stored is not None and self.stored.element is not None:
            return f'coalesce(sum(len("{self.stored.element.key}")), 0)'
        return "count(*)"

    @property
    def width_s(self) -> int:
        """Bucket width, seconds."""
        return RESOLUTIONS_S[self.resolution]

    @property
    def target(self) -> str:
        """The rollup table written."""
        return rollup_name(self.spec.name, self.resolution)

    @property
    def finer(self) -> str | None:
        """The finer rollup this one is combined from (None: from the raw rows)."""
        names = list(RESOLUTIONS_S)
        i = names.index(self.resolution)
        return rollup_name(self.spec.name, names[i - 1]) if i else None

    @property
    def source(self) -> str:
        """The stored table its buckets are computed from."""
        return self.finer or self.raw_table

    @property
    def count(self) -> str:
        """Aggregate over ``source``'s rows giving the raw rows they stand for."""
        return "sum(samples)" if self.finer else self.raw_count

    @property
    def source_time(self) -> str:
        """The time column of the source."""
        return "ts" if self.finer else (self.spec.time_column or "ts")

    def compute(self, cur, start: datetime, end: datetime, target: TableSpec) -> pa.Table:
        """The rollup rows of the buckets in [start, end), on a reader cursor."""
        if self.finer:
            return cur.execute(coarser_sql(self.spec, self.finer, start, end, self.width_s)).to_arrow_table()
        if self.stored is not None:
            rows = wide_minute_rows(cur, self.spec, self.stored, start, end, self.width_s, target)
            if rows is not None:
                return rows
        return view_minute_rows(cur, self.spec, start, end, self.width_s, target, self.stored)


def steps_of(catalogue: Catalogue) -> list[Step]:
    """Every rollup the collector maintains, finer resolutions first (a coarser one reads the finer); a wide
    table is rolled up per element, from its per-element view's rows."""
    shapes = [s for s in catalogue.row_shapes() if s.rollup]
    return [
        Step(s, r, catalogue.tables[s.stored_in] if s.stored_in else None)
        for r in RESOLUTIONS_S
        for s in shapes
    ]


def _scalar(cur, sql: str):
    row = cur.execute(sql).fetchone()
    return row[0] if row else None


def plan(cur, step: Step, now: datetime, recheck_s: float) -> tuple[datetime, datetime] | None:
    """The contiguous range of buckets [start, end) to roll now, or None when every closed bucket is current."""
    w = step.width_s
    t = _q(step.source_time)
    closed_end = floor_to(now, w)
    if step.finer:  # only hours whose every minute is rolled: up to the first raw row not rolled yet
        finer_newest = _scalar(cur, f"SELECT max(ts) FROM {_q(step.finer)}")
        if finer_newest is None:
            return None
        raw_t = _q(step.spec.time_column or "ts")
        finer_end = finer_newest + timedelta(seconds=RESOLUTIONS_S[list(RESOLUTIONS_S)[0]])
        pending = _scalar(
            cur, f"SELECT min({raw_t}) FROM {_q(step.raw_table)} WHERE {raw_t} >= {_lit(finer_end)}"
        )
        closed_end = min(closed_end, floor_to(pending, w)) if pending is not None else closed_end
    # from the newest rolled bucket on, itself included: a replace written in parts (Slice.writes) and cut
    # short leaves its last bucket written in part, whatever ``recheck_s``
    newest = _scalar(cur, f"SELECT max(ts) FROM {_q(step.target)}")
    after = f"AND {t} >= {_lit(newest)}" if newest is not None else ""
    first_new = _scalar(cur, f"SELECT min({t}) FROM {_q(step.source)} WHERE {t} < {_lit(closed_end)} {after}")
    start = floor_to(now - timedelta(seconds=recheck_s), w)
    if first_new is not None:
        start = min(start, floor_to(first_new, w))
    end = min(closed_end, start + timedelta(seconds=w * MAX_BUCKETS_PER_RUN[step.resolution]))
    if start >= end:
        return None
    have = dict(
        cur.execute(
            f"SELECT time_bucket(INTERVAL '{w} seconds', {t}) AS b, {step.count} FROM {_q(step.source)} "
            f"WHERE {t} >= {_lit(start)} AND {t} < {_lit(end)} GROUP BY b"
        ).fetchall()
    )
    rolled = dict(
        cur.execute(
            f"SELECT ts, sum(samples) FROM {_q(step.target)} WHERE ts >= {_lit(start)} AND ts < {_lit(end)} "
            "GROUP BY ts"
        ).fetchall()
    )
    changed = sorted(b for b, n in have.items() if rolled.get(b, 0) != n)
    if not changed:
        return None
    last = changed[-1] + timedelta(seconds=w)
    if not step.finer and last in have:  # a late sample changes the rate of the next one
        last += timedelta(seconds=w)
    return changed[0], _bounded_end(have, changed[0], min(last, end), w)


def _bounded_end(counts: dict, start: datetime, end: datetime, width_s: int) -> datetime:
    """``end``, or earlier so the buckets from ``start`` hold at most ``MAX_ROWS_PER_SLICE`` rows (at least one)."""
    total, at = 0, start
    while at < end:
        total += counts.get(at, 0)
        if total > MAX_ROWS_PER_SLICE and at > start:
            return at
        at += timedelta(seconds=width_s)
    return end


def replace(
    store, target: TableSpec, start: datetime, end: datetime, rows: pa.Table, delete: bool = True
) -> int:
    """In one transaction, the rollup rows of [start, end) become ``rows`` (runs on the writer thread);
    ``delete`` False: ``rows`` are added to those (the next part of a replace written in parts)."""
    cols = ", ".join(_q(c) for c in target.column_names)
    cur = store.cursor()
    try:
        cur.execute("BEGIN TRANSACTION")
        try:
            if delete:
                cur.execute(f"DELETE FROM {_q(target.name)} WHERE ts >= {_lit(start)} AND ts < {_lit(end)}")
            if rows.num_rows:
                cur.register(STAGING, rows)
                cur.execute(f"INSERT INTO {_q(target.name)} ({cols}) SELECT {cols} FROM {STAGING}")
                cur.unregister(STAGING)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    finally:
        cur.close()
    return rows.num_rows


@dataclass(frozen=True)
class Slice:
    """Rollup rows computed for the buckets [start, end) of one rollup, ready to replace the stored ones."""

    step: Step
    start: datetime
    end: datetime
    rows: pa.Table
    read: int  # source rows the buckets hold

    def write(self, store) -> int:
        """Replace the stored rows of the range in one transaction (on the writer thread); returns rows
        written."""
        return replace(store, store.catalogue[self.step.target], self.start, self.end, self.rows)

    def writes(self, part_bytes: int) -> list[Callable[[object], int]]:
        """The replace as writer jobs of about ``part_bytes`` of rows each, buckets in time order: the first
        deletes the range's stored rows, each adds its part, and each returns the rows it wrote.

        Between two jobs the writer commits the batches that came in meanwhile, so the acks never wait for a
        whole slice (a minute of 2,000 nodes' NVLink rollups is ~290 MB of rows, 0.8 s to insert on an idle
        host). A reader may see a bucket part written for that long. Should the collector stop between two
        jobs, the bucket written in part has fewer ``samples`` than raw rows, and the next pass (``plan``,
        which rechecks from the newest rolled bucket on) rolls it again."""
        rows = self.rows
        if rows.num_rows and pc.min(rows.column("ts")) != pc.max(rows.column("ts")):
            rows = rows.sort_by("ts")  # computed entity by entity: the buckets written in time order
        per = max(1, rows.num_rows * part_bytes // max(rows.nbytes, 1))
        parts = [rows.slice(at, per) for at in range(0, rows.num_rows, per)] or [rows]
        return [functools.partial(self._write_part, part, first=i == 0) for i, part in enumerate(parts)]

    def _write_part(self, part: pa.Table, store, first: bool) -> int:
        return replace(store, store.catalogue[self.step.target], self.start, self.end, part, delete=first)


def prepare(store, step: Step, now: datetime, recheck_s: float) -> Slice | None:
    """Plan and compute one slice of one rollup on a reader cursor; None when it is current."""
    cur = store.cursor()
    try:
        span = plan(cur, step, now, recheck_s)
        if span is None:
            return None
        start, end = span
        t = _q(step.source_time)
        rng = f"{t} >= {_lit(start)} AND {t} < {_lit(end)}"
        read = _scalar(cur, f"SELECT {step.count} FROM {_q(step.source)} WHERE {rng}") or 0
        target = store.catalogue[step.target]
        rows = step.compute(cur, start, end, target)
    finally:
        cur.close()
    rows = rows.select(target.column_names).cast(target.arrow_schema)
    return Slice(step, start, end, rows, int(read))


def roll_all(store, now: datetime | None = None, recheck_s: float = 300.0) -> int:
    """Roll every rollup of the store's catalogue until current, in this thread; returns rows written."""
    now = now or _now()
    total = 0
    for step in steps_of(store.catalogue):
        done: set[tuple[datetime, datetime]] = set()
        while (piece := prepare(store, step, now, recheck_s)) is not None:
            if (piece.start, piece.end) in done:  # rolled already and still "changed": its counts never
                break  # match (a wide table whose key list shrank under a longer carried list)
            done.add((piece.start, piece.end))
            total += piece.write(store)
    return total


#: A pass rolls at most this many slices of each rollup (``MAX_BUCKETS_PER_RUN``/``MAX_ROWS_PER_SLICE`` each)
#: before going on to the next: a minute of 2,000 nodes' NVLink is one slice (17 M per-link rows), and a pass
#: of one slice each fell a minute behind every other pass, as a pass there takes about as long as the period.
MAX_SLICES_PER_PASS = 10
#: Rollup rows written per writer job (``Slice.writes``): ~50 ms of inserting on an idle host.
WRITE_PART_BYTES = 16 * 2**20

#: The rollups' computing thread's nice value (Linux: per thread). A minute's rollups of 2,000 nodes read
#: ~4.6 M rows (~8 s of CPU on this 2-core host): at the default priority that took a core from the
#: writer and the gRPC loop for those seconds, and the acks waited (ack p99 1.2-1.7 s in the 5 s after
#: each minute, 0.4-0.9 s between). At nice 10 the scheduler gives the rollups what the two leave.
ROLLUP_NICE = 10


#: A pass starts this long after each multiple of ``rollup_interval_s`` on the clock (at most a quarter of
#: the interval): the minute just closed has its rows by then (agents flush every second, or every few
#: seconds when the collector asks them to), and it is rolled once. Passes a period after the previous one
#: ended drifted, ~23 s a pass at 2,000 nodes, until one found two minutes closed and rolled two minutes of
#: every table at once (at the end of a load run: ack p99 by 5 s went to 3-8 s there). The wall clock is
#: read afresh before each pass, so a clock stepped back or forth changes one wait, never more than a period.
ROLLUP_OFFSET_S = 15.0


def rollup_offset_s(interval_s: float) -> float:
    """The rollup task's offset after each multiple of its interval (``ROLLUP_OFFSET_S``, at most a quarter)."""
    return min(ROLLUP_OFFSET_S, interval_s / 4)


def _rollup_thread() -> None:
    """The rollup thread's start: its name in the OS, and its lower priority (``ROLLUP_NICE``)."""
    name_os_thread("c4-rollup")
    lower_thread_priority(ROLLUP_NICE)


class Rollups:
    """The collector's periodic rollup task: each run rolls every rollup until current (at most
    ``MAX_SLICES_PER_PASS`` slices each)."""

    def __init__(
        self, store, writer, metrics, recheck_s: float, leading: Callable[[], bool] | None = None
    ) -> None:
        self.store = store
        self.writer = writer
        self.metrics = metrics
        self.recheck_s = recheck_s
        #: whether this collector still runs the lake-wide tasks: a pass that finds it no longer does stops after
        #: the slice it is writing (a slice is never cut short), so that it does not roll on beside the new leader
        self.leading = leading or (lambda: True)
        #: the rollups are computed on a thread of their own at a lower priority (ROLLUP_NICE); DuckDB runs
        #: a query on its calling thread when the store has one thread
        self._pool = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="c4-rollup",
            initializer=_rollup_thread,
        )

    def close(self) -> None:
        """Let the computing thread go (a pass under way finishes on it)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self) -> dict[str, int]:
        """One pass over every rollup: compute beside ingest, replace on the writer; rows written per table."""
        out: dict[str, int] = {}
        now = _now()
        for step in steps_of(self.store.catalogue):
            rolled: set[tuple[datetime, datetime]] = set()
            while len(rolled) < MAX_SLICES_PER_PASS:
                if not self.leading():
                    return out
                piece, computed_s = await self._compute(step, now)
                if piece is None or (piece.start, piece.end) in rolled:  # current, or a slice whose counts
                    break  # never match (see roll_all): the next pass tries it again
                rolled.add((piece.start, piece.end))
                out[step.target] = out.get(step.target, 0) + await self._write(piece, computed_s)
        return out

    async def _compute(self, step: Step, now: datetime) -> tuple[Slice | None, float]:
        """The next slice of ``step`` computed on the rollup thread, and the seconds that took."""
        t0 = time.perf_counter()
        piece = await asyncio.get_running_loop().run_in_executor(
            self._pool, prepare, self.store, step, now, self.recheck_s
        )
        return piece, time.perf_counter() - t0

    async def _write(self, piece: Slice, computed_s: float) -> int:
        """Write ``piece`` on the writer, in parts (ingest's commits go in between); rows written."""
        t0 = time.perf_counter()
        written = 0
        for job in piece.writes(WRITE_PART_BYTES):
            done = await self.writer.call_async(job)
            if isinstance(done, BaseException):  # the writer hands a job's exception back
                raise done
            written += done
        self.metrics.inc("rollup_rows_read", piece.read)
        self.metrics.inc("rollup_rows_written", written)
        log.info(
            "rollup table=%s start=%s end=%s read=%d written=%d compute_s=%.3f write_s=%.3f",
            piece.step.target,
            piece.start,
            piece.end,
            piece.read,
            written,
            computed_s,
            time.perf_counter() - t0,
        )
        return written


def retain_rollups(store, now: datetime, retention_s: dict[str, float]) -> dict[str, int]:
    """Delete rollup rows older than their resolution's retention (runs on the writer thread)."""
    deleted: dict[str, int] = {}
    cur = store.cursor()
    try:
        for step in steps_of(store.catalogue):
            keep_s = retention_s.get(step.resolution)
            if not keep_s:
                continue
            cutoff = now - timedelta(seconds=keep_s)
            n = cur.execute(f"DELETE FROM {_q(step.target)} WHERE ts < {_lit(cutoff)}").fetchone()
            if n and n[0]:
                deleted[step.target] = int(n[0])
    finally:
        cur.close()
    return deleted
