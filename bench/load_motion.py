"""Batches of the load generator that move in time: each tick's rows carry that tick's timestamp, byte
and packet counters climb and float gauges wander, as a real node's do.

A batch template repeated as it was encoded gave every row of a run one timestamp and every counter
one value: the collector's rollups then had one minute to compute once, and its checkpoints compressed
constants. Here a template is encoded with sentinel values in its moving cells; where each column's
values sit in the bytes is found once per (table, ticks, length) and shared by every simulated agent
(names of one length give the same layout), and a batch is the template with those cells overwritten
(one numpy slice per column): tens of microseconds, not a new encode.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from c4.catalogue import load as load_catalogue

#: Sentinel bits: a µs timestamp of 2023 (plausible for the encoder), low bits say the column and cell.
_INT_MAGIC = 0x0006_0A5A_0000_0000
#: Sentinel bits of a float cell: a large finite double whose low bits say the column and cell.
_FLOAT_MAGIC = 0x4A5A_0000_0000_0000
#: Float gauges move within this share of their value, a different way each tick (cycling through):
_JITTER_SHARE = 0.05
_JITTER_TICKS = 64


def _int_sentinel(col: int, cell: int) -> int:
    return _INT_MAGIC | (col << 24) | cell


def _float_sentinel(col: int, cell: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", _FLOAT_MAGIC | (col << 24) | cell))[0]


def _sentinel_bytes(is_float: bool, col: int, cell: int) -> bytes:
    """A cell's sentinel as its 8 little-endian bytes in the encoded batch."""
    return (
        struct.pack("<d", _float_sentinel(col, cell))
        if is_float
        else struct.pack("<q", _int_sentinel(col, cell))
    )


def _step_per_s(column: str) -> tuple[float, float] | None:
    """How fast a counter of this name climbs per second on a busy node (low, high), else None (it stays)."""
    if column.endswith("_bytes"):
        return (1e9, 2e10)
    if column.endswith("_packets") or column == "multicast":
        return (1e5, 5e6)
    if column == "energy_mj":
        return (3e5, 7e5)
    if column in ("user_s", "idle_s"):
        return (5.0, 60.0)
    if column in ("system_s", "iowait_s"):
        return (0.1, 5.0)
    return None


@dataclass(frozen=True)
class Cell:
    """One moving column of a template: where its values sit and how they move."""

    offset: int  # byte offset of its first value in the Batch wire bytes
    count: int  # values (rows, or list elements of a LIST column), 8 bytes each
    is_float: bool
    is_ts: bool  # a timestamp: the batch's first tick's time plus the row's tick within the batch


@dataclass(frozen=True)
class Layout:
    """Where a table's moving cells sit in a template and their values at tick 0 (shared by agents)."""

    cells: tuple[Cell, ...]
    int_base: np.ndarray  # uint64, every integer cell in order: its value at tick 0 (ts: tick-in-batch µs)
    int_step: np.ndarray  # uint64 per tick (0 for timestamps: they take the batch's time)
    is_ts: np.ndarray  # uint64 0/1 per integer cell
    float_base: np.ndarray
    float_step: np.ndarray
    float_jitter: np.ndarray  # (_JITTER_TICKS, float cells): added at tick k, row k % _JITTER_TICKS
    sentinels: tuple[bytes, ...]  # per cell, the first value's sentinel bytes (to check a template)


def moving_columns(table: str) -> dict[str, str]:
    """The table's columns that move from tick to tick -> their catalogue type (timestamps, climbing
    counters, float gauges); the rest (labels, error counters, fixed gauges) stay as sampled."""
    out = {}
    for c in load_catalogue()[table].columns:
        item = c.sql_type[:-2] if c.sql_type.endswith("[]") else c.sql_type
        if item == "TIMESTAMP" or c.name == "nvml_ts_us":
            out[c.name] = c.sql_type
        elif item in ("UBIGINT", "BIGINT", "DOUBLE") and c.kind == "counter" and _step_per_s(c.name):
            out[c.name] = c.sql_type
        elif item == "DOUBLE" and c.kind == "gauge":
            out[c.name] = c.sql_type
    return out


def with_sentinels(table: str, names: list[str], columns: list[list]) -> tuple[list[list], list]:
    """The columns with every present cell of a moving column replaced by its sentinel; and per moving
    column (index, name, type, the original values flattened, row of each flattened value)."""
    moving = moving_columns(table)
    out, plan = [], []
    for j, (name, values) in enumerate(zip(names, columns, strict=True)):
        sql_type = moving.get(name)
        if sql_type is None:
            out.append(values)
            continue
        is_float = sql_type.startswith("DOUBLE")
        make = _float_sentinel if is_float else _int_sentinel
        flat, rows, new, cell = [], [], [], 0
        for r, v in enumerate(values):
            if sql_type.endswith("[]"):
                if v is None:
                    new.append(None)
                    continue
                items = []
                for x in v:
                    items.append(make(j, cell) if x is not None else None)
                    flat.append(x)
                    rows.append(r)
                    cell += 1
                new.append(items)
            else:
                new.append(make(j, cell) if v is not None else None)
                flat.append(v)
                rows.append(r)
                cell += 1
        out.append(new)
        plan.append((j, name, sql_type, flat, rows))
    return out, plan


def find_layout(wire: bytes, plan: list, rows_per_tick: int, interval_us: int, seed: int = 0) -> Layout:
    """Locate each moving column's values in ``wire`` (encoded ``with_sentinels``) and give their motion.

    Cells of one column sit side by side (Arrow's data buffer; a LIST's child values), columns in order;
    ValueError when a column's sentinels are not found where that says (a layout this cannot patch)."""
    rng = np.random.default_rng(seed)
    cells, sentinels = [], []
    ints: list[list] = [[], [], []]  # base, step, is_ts
    floats: list[list] = [[], [], []]  # base, step, jitter scale
    at = 0
    for j, name, sql_type, flat, rows in plan:
        is_float = sql_type.startswith("DOUBLE")
        present = [k for k, v in enumerate(flat) if v is not None]  # cells with a value (the rest are NULL)
        if not present:
            continue
        k0, last_k = present[0], present[-1]
        first = _sentinel_bytes(is_float, j, k0)
        found = wire.find(first, at)
        if found < 0:
            raise ValueError(f"load motion: column {name!r}'s values are not in the template")
        start = found - 8 * k0
        if wire[start + 8 * last_k : start + 8 * last_k + 8] != _sentinel_bytes(is_float, j, last_k):
            raise ValueError(f"load motion: column {name!r}'s values are not side by side in the template")
        is_ts = sql_type.startswith("TIMESTAMP")
        cells.append(Cell(start, len(flat), is_float, is_ts))
        sentinels.append(first)
        at = start + 8 * len(flat)
        tick_of = np.array([r // rows_per_tick for r in rows], dtype=np.int64)
        if is_ts:
            ints[0].append((tick_of * interval_us).astype(np.uint64))
            ints[1].append(np.zeros(len(flat), np.uint64))
            ints[2].append(np.ones(len(flat), np.uint64))
        elif name == "nvml_ts_us":  # NVML's own µs clock: a second per tick from the sampled value
            base = np.array([v or 0 for v in flat], dtype=np.int64)
            ints[0].append((base + tick_of * interval_us).astype(np.uint64))
            ints[1].append(np.full(len(flat), interval_us, np.uint64))
            ints[2].append(np.zeros(len(flat), np.uint64))
        else:
            span = _step_per_s(name)
            # one rate per cell of the first tick, the same cell of each later tick in the batch climbs alike
            per_tick = len(flat) // max(1, int(tick_of[-1]) + 1)
            rate = rng.uniform(*span, per_tick) if span else np.zeros(per_tick)
            step = np.resize(rate, len(flat)) * interval_us / 1e6
            base = np.array([v or 0 for v in flat], dtype=np.float64) + tick_of * step
            if is_float:
                floats[0].append(base)
                floats[1].append(step if span else np.zeros(len(flat)))
                floats[2].append(np.zeros(len(flat)) if span else np.abs(base) * _JITTER_SHARE)
            else:
                ints[0].append(base.astype(np.uint64))
                ints[1].append(step.astype(np.uint64))
                ints[2].append(np.zeros(len(flat), np.uint64))
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    scale = cat(floats[2], np.float64)
    return Layout(
        tuple(cells),
        cat(ints[0], np.uint64),
        cat(ints[1], np.uint64),
        cat(ints[2], np.uint64),
        cat(floats[0], np.float64),
        cat(floats[1], np.float64),
        rng.uniform(-1.0, 1.0, (_JITTER_TICKS, len(scale))) * scale,
        tuple(sentinels),
    )


def fits(layout: Layout, wire: bytes) -> bool:
    """``wire`` has this layout's sentinels where it says (another agent's template of the same shape)."""
    return all(
        wire[c.offset : c.offset + 8] == s for c, s in zip(layout.cells, layout.sentinels, strict=True)
    ) and (not layout.cells or len(wire) >= layout.cells[-1].offset + 8 * layout.cells[-1].count)


def moved(wire: bytes, layout: Layout, tick: int, first_tick_us: int) -> bytearray:
    """The template's bytes with every moving cell at its value for a batch whose first tick is the
    agent's ``tick``-th, sampled at ``first_tick_us`` (µs since the epoch)."""
    buf = bytearray(wire)
    if not layout.cells:
        return buf
    k = np.uint64(tick)
    ints = layout.int_base + k * layout.int_step + np.uint64(first_tick_us) * layout.is_ts
    floats = layout.float_base + float(tick) * layout.float_step
    if len(floats):
        floats = floats + layout.float_jitter[tick % _JITTER_TICKS]
    view = np.frombuffer(buf, np.uint8)
    i = f = 0
    int_bytes, float_bytes = ints.view(np.uint8), floats.view(np.uint8)
    for c in layout.cells:
        n = 8 * c.count
        if c.is_float:
            view[c.offset : c.offset + n] = float_bytes[f : f + n]
            f += n
        else:
            view[c.offset : c.offset + n] = int_bytes[i : i + n]
            i += n
    return buf
