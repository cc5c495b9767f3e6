"""A wide table's rollup computed on matrices (rows x elements), without flattening to per-element samples.

``c4.collector.rollup_wide`` turns the wide rows of a chunk into per-element samples (an index per element
sample, a permutation to element order, a gather per column) before the statistics. When every row of a
block of entities has the same number of elements L, and each entity the same key list in every row (what
a sampler sends: a GPU's links are fixed at probe), a list column is already an R x L matrix: row r holds
the L elements of wide row r. Each element's rates are differences down a column of that matrix and its
minute's statistics reductions down the column over the minute's rows, so the per-element samples are
never built. The numbers are those of ``c4.collector.rollup.counter_rates`` and ``_stats`` (the same
definitions: the previous valid reading of the same entity, NaN = NULL); ``tests/collector/
test_rollup_nvlink.py`` checks both against the per-element view.

A chunk whose entities have different L is computed in runs of entities with the same L. A layout the
matrices do not hold (an entity whose key list changes between rows, a filled list longer than the row's
key list, NULL or non-integer keys) gives None: the caller takes the per-element path.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from c4.catalogue import TableSpec
from c4.collector.rollup_wide import list_lengths, single_array


def _cols(matrix: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The columns ``at`` of a matrix, in C order: ``matrix[:, at]`` is in F order, on which numpy's
    reductions along a row (``reduceat``) are ~4x slower."""
    return np.take(matrix, at, axis=1)


def counter_delta(cur: np.ndarray, prev: np.ndarray, wrap_bits: int) -> np.ndarray:
    """Increase from ``prev`` to ``cur`` as the ``_rate`` view counts it: a decrease is a wrap (declared
    width, previous value in the top quarter) or a reset (the new value counts since)."""
    if cur.dtype.kind == "f":
        return np.where(cur >= prev, cur - prev, cur)
    cur, prev = cur.astype(np.uint64, copy=False), prev.astype(np.uint64, copy=False)
    if not (cur < prev).any():  # no wrap, no reset (the common case): the plain difference
        return (cur - prev).astype(np.float64)
    down = cur
    if wrap_bits:
        mod = 2**wrap_bits
        wrapped = (cur - prev + np.uint64(mod % 2**64)) if wrap_bits < 64 else cur - prev  # modulo 2^64
        down = np.where(prev >= np.uint64(mod * 3 // 4), wrapped, cur)
    return np.where(cur >= prev, cur - prev, down).astype(np.float64)


def matrix_stats(v: np.ndarray, starts: np.ndarray, dense: bool = False) -> dict[str, np.ndarray]:
    """min, mean, max, last (NaN for none) and n of each row of ``v`` (elements x samples, NaN = NULL) per
    group of samples starting at ``starts`` (elements x groups); ``dense``: no NaN in ``v``."""
    samples = v.shape[1]
    if dense:
        n = np.broadcast_to(np.diff(np.append(starts, samples)), (len(v), len(starts)))
        return {
            "min": np.minimum.reduceat(v, starts, axis=1),
            "mean": np.add.reduceat(v, starts, axis=1) / n,
            "max": np.maximum.reduceat(v, starts, axis=1),
            "last": _cols(v, np.append(starts[1:], samples) - 1),
            "n": n,
        }
    valid = ~np.isnan(v)
    n = np.add.reduceat(valid, starts, axis=1, dtype=np.int64)
    total = np.add.reduceat(np.where(valid, v, 0.0), starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    last_at = np.maximum.reduceat(np.where(valid, np.arange(samples), -1), starts, axis=1)
    last = np.where(last_at >= 0, np.take_along_axis(v, np.maximum(last_at, 0), axis=1), np.nan)
    return {
        "min": np.fmin.reduceat(v, starts, axis=1),
        "mean": mean,
        "max": np.fmax.reduceat(v, starts, axis=1),
        "last": last,
        "n": n,
    }


def matrix_rates(
    ts_us: np.ndarray,
    entity_first: np.ndarray,
    values: np.ndarray,
    valid: np.ndarray | None,
    wrap_bits: int,
    at: np.ndarray,
    shared: dict,
    steady: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each element's increase since its last valid reading in the same entity, the seconds between them
    and their ratio (NaN where the ``_rate`` view has NULL), at the samples ``at``; ``values`` elements x
    samples (a sample: a wide row), ``valid`` False where NULL (None: every element read), ``entity_first``
    each sample's entity's first sample; ``steady`` True: every element is one value within its entity
    (``values`` may then be None), None: not known. An array the same for every element is returned as
    one row (1-D): the seconds of a counter every element of which is read, and all three of a steady one.

    ``shared`` is kept across the counters of one block: the times of every counter read in every sample
    are computed once, and counters that never move within an entity share one all-zero result."""
    if valid is None:
        if steady is None:
            moved = values[:, 1:] != values[:, :-1]
            moved[:, entity_first[1:] == np.arange(1, values.shape[1])] = (
                False  # another entity's first sample
            )
            steady = not moved.any()  # every element one value in its entity: every increase is 0
        if steady and "zero" in shared:
            return shared["zero"]
        if "times" not in shared:
            before = at - 1
            has = before >= entity_first[at]
            before = np.where(has, before, at)
            with np.errstate(invalid="ignore", divide="ignore"):
                dt = (ts_us[at] - ts_us[before]) / 1e6
            ok = has & (dt != 0)
            shared["times"] = (before, ok, np.where(ok, dt, np.nan))
        before, ok, dt = shared["times"]
        if steady:
            inc = np.where(ok, 0.0, np.nan)
        else:
            inc = np.where(ok, counter_delta(_cols(values, at), _cols(values, before), wrap_bits), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (inc, dt, inc / dt)
        if steady:
            shared["zero"] = out
        return out
    samples = np.arange(values.shape[1])
    last_valid = np.maximum.accumulate(np.where(valid, samples, -1), axis=1)
    before = np.where(at > 0, _cols(last_valid, np.maximum(at - 1, 0)), -1)
    has = _cols(valid, at) & (before >= entity_first[at])
    before = np.where(has, before, at)
    with np.errstate(invalid="ignore", divide="ignore"):
        dt = (ts_us[at] - ts_us[before]) / 1e6
        ok = has & (dt != 0)
        dt = np.where(ok, dt, np.nan)
        prev = np.take_along_axis(values, before, axis=1)
        inc = np.where(ok, counter_delta(_cols(values, at), prev, wrap_bits), np.nan)
        return inc, dt, inc / dt


def _column_matrix(
    wide: pa.Table,
    name: str,
    is_list: bool,
    on_change: bool,
    used: np.ndarray,
    entity_first: np.ndarray,
    width: int,
    counter: bool = False,
) -> tuple[np.ndarray | None, np.ndarray | None, bool | None] | None:
    """Column ``name`` at the rows ``used`` as a matrix (``width`` elements x rows), its validity (None: all
    read) and whether it is steady (True: every element one value within its entity; None: not known); an
    on-change list column's NULL lists are filled from the entity's last row that carried one. None where a
    filled list is longer than ``width`` (the view would key elements the row lacks).

    An on-change ``counter`` every row of which is filled, whose lists never change within an entity (an
    error counter, most of the time), is known steady from its few lists alone: its matrix is not built."""
    col = single_array(wide.column(name))
    n = len(col)
    if not is_list:  # a scalar column: every element has its row's value
        values = col.fill_null(0).to_numpy(zero_copy_only=False)[used]
        matrix = np.repeat(values[None, :], width, axis=0)
        if not col.null_count:
            return matrix, None, None
        return matrix, np.repeat(~np.asarray(col.is_null())[used][None, :], width, axis=0), None
    child = col.values
    offsets = col.offsets.to_numpy()
    length = list_lengths(col)
    src = used
    if on_change:  # a NULL list: unchanged since the entity's last row that carried one
        index = np.arange(n)
        carried = np.maximum.accumulate(np.where(length >= 0, index, -1)) if n else index
        src = np.where(carried >= entity_first, carried, -1)[used]
    src_len = np.where(src >= 0, length[np.maximum(src, 0)], -1)
    if np.any(src_len > width):
        return None
    lists = length >= 0
    span = slice(offsets[0], offsets[-1])
    nothing = not (src_len > 0).any() or child.null_count == len(child)  # (a counter this GPU lacks)
    child_valid = ~np.asarray(child.is_null()) if child.null_count and not nothing else None
    if nothing or child_valid is not None and not child_valid[span].any():  # no element read in any row
        return None, np.zeros((width, len(used)), dtype=bool), None
    flat = child.fill_null(0).to_numpy(zero_copy_only=False)
    if ((length == width) | ~lists).all():  # every list there of ``width`` (what a sampler sends)
        # the lists' elements are contiguous: one row of this matrix per list, in row order
        by_list = flat[span].reshape(-1, width)
        read = src_len == width
        if counter and on_change and read.all() and (child_valid is None or child_valid[span].all()):
            entity = entity_first[lists]  # each list's entity
            if not (by_list[1:] != by_list[:-1])[entity[1:] == entity[:-1]].any():
                return None, None, True
        ordinal = np.cumsum(lists) - 1  # each row's list among the lists
        pick = np.maximum(ordinal[np.maximum(src, 0)], 0)  # (a row with no list: any, its elements NULL)
        # C order (elements x rows, each element's samples contiguous): numpy's reduceat along the rows is
        # ~4x slower on the F-ordered transpose
        matrix = np.ascontiguousarray(by_list[pick].T)
        if child_valid is None:
            valid = None if read.all() else np.broadcast_to(read, matrix.shape)
        else:
            valid = np.ascontiguousarray(child_valid[span].reshape(-1, width)[pick].T) & read
        return matrix, None if valid is None else _valid_or_none(valid), None
    at = offsets[np.maximum(src, 0)] + np.arange(width)[:, None]
    present = np.arange(width)[:, None] < src_len  # a row with no list (or a shorter one): NULL elements
    at = np.where(present, at, 0)
    matrix = flat[at] if len(flat) else np.zeros(at.shape, flat.dtype)
    valid = present if child_valid is None or not len(flat) else present & child_valid[at]
    return matrix, _valid_or_none(valid), None


def rate_summary(
    inc: np.ndarray, dt: np.ndarray, rate: np.ndarray, starts: np.ndarray, shape: tuple[int, int]
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A counter's rate statistics, increase and seconds per group starting at ``starts``, each flattened
    from ``shape`` (elements x groups); an input given as one row (1-D) is the same for every element."""

    def rows(a: np.ndarray) -> np.ndarray:
        return a if a.ndim == 2 else a[None, :]

    def flat(a: np.ndarray) -> np.ndarray:
        return np.broadcast_to(a, shape).ravel()

    rate = rows(rate)
    stats = matrix_stats(rate, starts, dense=not np.isnan(rate).any())
    some = stats["n"] > 0
    increase = np.where(some, np.add.reduceat(np.nan_to_num(rows(inc)), starts, axis=1), np.nan)
    span_s = np.where(some, np.add.reduceat(np.nan_to_num(rows(dt)), starts, axis=1), np.nan)
    return {s: flat(a) for s, a in stats.items()}, flat(increase), flat(span_s)


def _valid_or_none(valid: np.ndarray) -> np.ndarray | None:
    """``valid``, or None when every element is read."""
    return None if valid.all() else valid


def matrix_minute_rows(
    wide: pa.Table,
    new_entity: np.ndarray,
    spec: TableSpec,
    stored: TableSpec,
    gauges: list[str],
    lookback_us: int,
    start_us: int,
    width_s: int,
    to_table,
) -> pa.Table | None:
    """The rollup rows of the buckets from ``start_us`` on of ``wide`` rows (whole entities, entity and time
    order; ``new_entity`` True at each entity's first row) computed on matrices; None where their layout
    does not allow it. Rows before ``lookback_us`` only fill on-change lists; rows before ``start_us`` only
    give the first rates. ``to_table(cols)`` makes the rollup table of the computed columns."""
    el = stored.element
    n = wide.num_rows
    keys = single_array(wide.column(el.key))
    if keys.null_count or keys.values.null_count or not pa.types.is_integer(keys.type.value_type):
        return None
    ts = wide.column(stored.time_column or "ts").cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
    index = np.arange(n)
    entity_first = np.maximum.accumulate(np.where(new_entity, index, 0)) if n else index
    width_of = np.diff(keys.offsets.to_numpy())
    used = np.flatnonzero((ts >= lookback_us) & (width_of > 0))
    if not len(used):
        return to_table(None)
    widths = width_of[used]
    width = int(widths[0])
    if not (widths == width).all():  # entities with different numbers of elements: a run of each
        entity = np.cumsum(new_entity) - 1
        if np.any((entity[used][1:] == entity[used][:-1]) & (widths[1:] != widths[:-1])):
            return None  # an entity whose element count changes
        firsts = np.flatnonzero(new_entity)
        entity_width = np.zeros(len(firsts), np.int64)
        entity_width[entity[used]] = widths
        cut = np.flatnonzero(np.diff(entity_width) != 0) + 1
        bounds = np.append(np.append(0, firsts[cut]), n)
        parts = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            part = matrix_minute_rows(
                wide.slice(a, b - a),
                new_entity[a:b],
                spec,
                stored,
                gauges,
                lookback_us,
                start_us,
                width_s,
                to_table,
            )
            if part is None:
                return None
            parts.append(part)
        return pa.concat_tables(parts)
    key_values = keys.values.to_numpy(zero_copy_only=False)
    key = key_values[keys.offsets.to_numpy()[used][:, None] + np.arange(width)]
    m = len(used)
    first_used = np.ones(m, dtype=bool)
    first_used[1:] = entity_first[used][1:] != entity_first[used][:-1]
    efirst = np.maximum.accumulate(np.where(first_used, np.arange(m), 0))  # in used-row space
    if not np.array_equal(key, key[efirst]):  # an entity's key list changes between rows: sort per element
        return None
    tsu = ts[used]
    keep = np.flatnonzero(tsu >= start_us)
    if not len(keep):
        return to_table(None)
    by_name = {c.name: c for c in stored.columns}
    counters = {c.name for c in spec.counters}
    matrices = {}
    for name in [*gauges, *(c.name for c in spec.counters)]:
        c = by_name[name]
        got = _column_matrix(wide, name, c.list, c.on_change, used, entity_first, width, name in counters)
        if got is None:
            return None
        matrices[name] = got
    width_us = width_s * 1_000_000
    bucket = tsu[keep] // width_us
    entity_of = efirst[keep]
    new = np.ones(len(keep), dtype=bool)
    new[1:] = (entity_of[1:] != entity_of[:-1]) | (bucket[1:] != bucket[:-1])
    starts = np.flatnonzero(new)
    groups = len(starts)
    # the rollup rows element by element (every group's first element, then every group's second ...)
    cols: dict[str, object] = {
        "ts": pa.array(np.tile(bucket[starts] * width_us, width), pa.int64()).cast(pa.timestamp("us")),
        "samples": np.tile(np.diff(np.append(starts, len(keep))), width),
    }
    first_rows = pa.array(np.tile(used[keep[starts]], width))
    for k in stored.keys:
        cols[k] = wide.column(k).take(first_rows)
    cols[el.key] = pa.array(key[keep[starts]].T.ravel(), keys.type.value_type)
    nothing = np.full(groups * width, np.nan)
    for name in gauges:
        values, valid, _ = matrices[name]
        if valid is not None and not valid.any():
            stats = {s: nothing for s in ("min", "mean", "max", "last")} | {
                "n": np.zeros(groups * width, np.int64)
            }
        else:
            v = _cols(values, keep).astype(np.float64, copy=False)
            if valid is not None:
                v = np.where(_cols(valid, keep), v, np.nan)
            dense = valid is None and not np.isnan(v).any()
            stats = {s: a.ravel() for s, a in matrix_stats(v, starts, dense).items()}
        for stat, arr in stats.items():
            cols[f"{name}_{stat}"] = arr
    shared: dict = {}
    zero_summary = None  # the statistics of the all-zero rates steady counters share (matrix_rates)
    for c in spec.counters:
        values, valid, steady = matrices[c.name]
        if valid is not None and not valid.any():
            for stat in ("min", "mean", "max", "last"):
                cols[f"{c.name}_rate_{stat}"] = nothing
            cols[f"{c.name}_rate_n"] = np.zeros(groups * width, np.int64)
            cols[f"{c.name}_increase"] = cols[f"{c.name}_span_s"] = nothing
            continue
        rate_of = matrix_rates(tsu, efirst, values, valid, c.wrap_bits, keep, shared, steady)
        zero = rate_of is shared.get("zero")
        if zero and zero_summary is not None:
            summary = zero_summary
        else:
            summary = rate_summary(*rate_of, starts, (width, groups))
            if zero:
                zero_summary = summary
        stats, increase, span_s = summary
        for stat, arr in stats.items():
            cols[f"{c.name}_rate_{stat}"] = arr
        cols[f"{c.name}_increase"] = increase
        cols[f"{c.name}_span_s"] = span_s
    return to_table(cols)
