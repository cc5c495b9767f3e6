"""A wide table's rows as per-element samples for the rollup compute: flattened and filled in numpy.

A wide table (``per_element`` in the catalogue, e.g. ``nvlink_gpu_samples``: one row per GPU per tick, a
list element per NVLink) is rolled up per element. Its per-element view unnests the lists in DuckDB after a
window function fills the on-change counters; doing that per slice cost ~10 us per element. Here the wide
rows are read once as Arrow and, without building a table per element:

1. each on-change list column is filled at the row level: a NULL list (not sent: unchanged) takes the list
   of the entity's last row that carried one, as ``last_value(... IGNORE NULLS)`` does in the view (the
   rows read start one ``keyframe_within_s`` before the samples kept, as the view's bounded SELECT does);
2. the element ``i`` of every list belongs to element ``i`` of the key list (the view's zipped unnest);
   a NULL element stays NULL (the counter is not supported);
3. the elements are put in element (entity, key) and time order: when every row of an entity carries the
   same key list (the sampler's case: a GPU's links are fixed at probe) that is a transpose per entity,
   otherwise a stable sort.

The result holds, per element sample, the wide row it came from, its key value and the values of the
requested columns, in the order ``c4.collector.rollup.bucket_table`` needs.

The collector first computes a chunk as matrices (``c4.collector.rollup_matrix``: no per-element samples
built); this flatten is for the layouts those do not hold (an entity whose key list changes order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from c4.catalogue import TableSpec


@dataclass(frozen=True)
class ElementSamples:
    """Per-element samples of wide rows, in element and time order."""

    row: np.ndarray  # the wide row each sample comes from (index into the rows given)
    key: np.ndarray  # the element key (e.g. the link index) of each sample
    key_type: pa.DataType  # the element key's Arrow type
    ts_us: np.ndarray  # each sample's time, microseconds since the epoch
    new_element: np.ndarray  # True at each element's first sample (its entity or key differs from the last)
    values: dict[str, tuple[np.ndarray, np.ndarray]]  # column -> (values, valid: False where NULL)


def single_array(col: pa.ChunkedArray) -> pa.Array:
    """One array of a column (no copy when it is one chunk)."""
    if not isinstance(col, pa.ChunkedArray):
        return col
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def list_lengths(lists: pa.ListArray) -> np.ndarray:
    """Each list's length, -1 for a NULL list."""
    return pc.fill_null(pc.list_value_length(lists), -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _child(lists: pa.ListArray) -> tuple[np.ndarray, np.ndarray | None]:
    """The flat values a list array's offsets index (NULL as 0) and their validity (None: all valid)."""
    child = lists.values
    valid = ~np.asarray(child.is_null()) if child.null_count else None
    return child.fill_null(0).to_numpy(zero_copy_only=False), valid


def _element_order(
    entity: np.ndarray, pos: np.ndarray, key: np.ndarray, rows: np.ndarray, first: np.ndarray
) -> np.ndarray:
    """The permutation putting element samples (in entity, time, position order) in entity, key, time order.

    ``rows`` are the wide rows that have elements, ascending; ``first`` the index of each one's first element.
    """
    n_el = np.diff(np.append(first, len(entity)))
    ent = entity[first]
    same = ent[1:] == ent[:-1]  # row j+1 is of the same entity as row j
    regular = not np.any(same & (n_el[1:] != n_el[:-1]))
    if regular and len(entity):
        follows = np.zeros(len(rows), dtype=bool)
        follows[1:] = same
        at = np.flatnonzero(np.repeat(follows, n_el))  # elements whose row follows one of the same entity
        regular = bool(np.array_equal(key[at], key[at - np.repeat(n_el, n_el)[at]]))
    if not regular:  # key lists differ between an entity's rows: sort (stable: time order kept per key)
        return np.lexsort((key, entity))
    # every row of an entity has the same key list: the entity's elements are an R x L matrix to transpose
    new = np.ones(len(rows), dtype=bool)
    new[1:] = ~same
    group_first = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    rows_in = np.diff(np.append(group_first, len(rows)))  # R per entity
    rank = np.arange(len(rows)) - group_first[group]  # a row's place among its entity's rows
    j = np.repeat(np.arange(len(rows)), n_el)  # each element's row, as an index into ``rows``
    g = group[j]
    dest = first[group_first[g]] + pos * rows_in[g] + rank[j]
    order = np.empty(len(entity), dtype=np.int64)
    order[dest] = np.arange(len(entity))
    return order


def element_samples(
    wide: pa.Table, stored: TableSpec, new_entity: np.ndarray, keep_from_us: int, names: list[str]
) -> ElementSamples | None:
    """The per-element samples of ``wide`` rows dated from ``keep_from_us`` on, with ``names``' values, as
    the per-element view gives them; None where the view would make elements the key list lacks (a filled
    list longer than the row's key list, a NULL key element) or not computed here (a key that is not an
    integer): the caller reads the view instead.

    ``wide`` is in entity and time order, and starts a ``keyframe_within_s`` before ``keep_from_us`` so
    every on-change counter is filled as the view fills it; ``new_entity`` is True at each entity's first row.
    """
    el = stored.element
    if el is None:
        raise ValueError(f"{stored.name!r} is not a wide table")
    by_name = {c.name: c for c in stored.columns}
    n = wide.num_rows
    index = np.arange(n)
    ts = wide.column(stored.time_column or "ts").cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
    entity_row = np.cumsum(new_entity) - 1
    entity_first = np.maximum.accumulate(np.where(new_entity, index, 0)) if n else index
    keys = single_array(wide.column(el.key))
    if keys.values.null_count or not pa.types.is_integer(keys.type.value_type):  # NULL or non-numeric keys
        return None
    key_len = np.maximum(list_lengths(keys), 0)
    n_el = np.where(ts >= keep_from_us, key_len, 0)
    rows = np.flatnonzero(n_el)
    first = np.cumsum(n_el[rows]) - n_el[rows]
    row = np.repeat(rows, n_el[rows])
    pos = np.arange(len(row)) - np.repeat(first, n_el[rows])
    key_values = keys.values.to_numpy(zero_copy_only=False)
    key_offsets = keys.offsets.to_numpy()
    key = key_values[key_offsets[row] + pos] if len(row) else np.zeros(0, key_values.dtype)
    order = _element_order(entity_row[row], pos, key, rows, first)
    row, pos, key = row[order], pos[order], key[order]
    new_element = np.ones(len(row), dtype=bool)
    new_element[1:] = (entity_row[row[1:]] != entity_row[row[:-1]]) | (key[1:] != key[:-1])
    values: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    key_at = key_offsets[row] + pos  # where each sample's element is in a list laid out as the key list
    for name in names:
        if not by_name[name].list:  # a scalar column: each element has its row's value
            col = single_array(wide.column(name))
            valid = ~np.asarray(col.is_null()) if col.null_count else np.ones(n, dtype=bool)
            values[name] = (col.fill_null(0).to_numpy(zero_copy_only=False)[row], valid[row])
            continue
        lists = single_array(wide.column(name))
        flat, child_valid = _child(lists)
        if not lists.null_count and np.array_equal(lists.offsets.to_numpy(), key_offsets):
            # every list there and laid out as the key list (what a sampler sends): one gather
            valid = np.ones(len(row), bool) if child_valid is None else child_valid[key_at]
            values[name] = (flat[key_at], valid)
            continue
        length = list_lengths(lists)
        src = index
        if by_name[name].on_change:  # a NULL list: unchanged since the entity's last row that carried one
            carried = np.maximum.accumulate(np.where(length >= 0, index, -1)) if n else index
            src = np.where(carried >= entity_first, carried, -1)
        src_len = np.where(src >= 0, length[np.maximum(src, 0)], -1)
        if np.any(src_len[rows] > key_len[rows]):
            return None
        if not len(flat) or child_valid is not None and not child_valid.any():  # NULL everywhere
            values[name] = (np.zeros(len(row), flat.dtype), np.zeros(len(row), dtype=bool))
            continue
        base = np.where(
            src >= 0, lists.offsets.to_numpy()[np.maximum(src, 0)], 0
        )  # per row: its list's start
        if np.array_equal(
            src_len[rows], key_len[rows]
        ):  # every row has a (filled) list: no element NULL for it
            where = base[row] + pos
            valid = np.ones(len(row), bool) if child_valid is None else child_valid[where]
        else:  # rows with no list yet (none carried in the window): their elements are NULL
            ok = pos < src_len[row]
            where = np.where(ok, base[row] + pos, 0)
            valid = ok if child_valid is None else ok & child_valid[where]
        values[name] = (flat[where], valid)
    return ElementSamples(row, key, keys.type.value_type, ts[row], new_element, values)
