"""The store and the timings of ``c4 bench rollup``: N nodes' minutes of real sampler rows, and the rollup
compute paths timed side by side on one slice (``c4.bench.rollup`` prints them)."""

from __future__ import annotations

import functools
import multiprocessing
import resource
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from c4.agent.batcher import rows_to_table
from c4.agent.gpu import KEYFRAME_TICKS, GpuSampler
from c4.agent.nvml import Nvml
from c4.catalogue import load
from c4.catalogue.rollup import rolled_gauges, rollup_keys
from c4.collector import rollup as r
from c4.collector.rollup import Step, floor_to, view_minute_rows, wide_minute_rows
from c4.collector.rollup_wide import element_samples
from c4.collector.store import PendingBatch, Store, default_store_threads
from c4.sim.fake_nvml import FakeNvml, eight_gpu_scenario

GPUS = 8
LINKS = 18  # an H100's NVLinks
#: Minutes built before the timed slice: the rate look-back and the on-change fill's keyframe period.
LEAD_MINUTES = 3
#: Nodes the offered rate is given for (the fleet size the rollup has to keep up with).
OFFERED_NODES = 1000


def _drive(sc: dict, tick: int) -> None:
    """Error counters that move now and then on a few links, as a healthy busy node's do."""
    gpus = sc["gpus"]
    if tick % 41 == 7:
        gpus[1]["link_counters"]["3"] = {"replay_errors": tick, "recovery_errors": tick // 41}
    if tick % 97 == 13:
        gpus[5]["link_counters"]["11"] = {"link_crc_errors": 2 * tick}


def sampled_node(seconds: int, start: datetime, keyframe_ticks: int | None) -> dict[str, pa.Table]:
    """One node's rows per table for ``seconds`` ticks from ``start``, from the real GPU sampler."""

    cat = load()
    sc = eight_gpu_scenario(model="H100")
    sc["start_s"] = 100.0
    for g in sc["gpus"]:
        g["link_counters"] = {}
    clock = [100.0]
    sampler = GpuSampler(
        Nvml(FakeNvml(sc, clock=lambda: clock[0])),
        xid_events=False,
        processes=False,
        keyframe_ticks=keyframe_ticks or KEYFRAME_TICKS,
    )
    sampler.probe()
    parts: dict[str, list[pa.Table]] = {"gpu_samples": [], "nvlink_gpu_samples": []}
    for tick in range(seconds):
        _drive(sc, tick)
        clock[0] += 1.0
        rows = sampler.sample(0)
        defaults = {"ts": start + timedelta(seconds=tick), "node": "n", "job": "train"}
        for name, tables in parts.items():
            tables.append(rows_to_table(cat, name, rows[name], defaults))
    return {name: pa.concat_tables(tables) for name, tables in parts.items()}


def _for_nodes(one: pa.Table, nodes: int) -> pa.Table:
    """``one`` node's rows repeated for ``nodes`` nodes (host0, host1, ...), each 1 ms after the one before."""
    k = one.num_rows
    table = one.take(pa.array(np.tile(np.arange(k), nodes)))
    node = np.repeat(np.arange(nodes), k)
    hosts = pa.array(np.char.add("host", np.arange(nodes).astype(str)))
    ts_us = table.column("ts").cast(pa.int64()).to_numpy() + node * 1000
    table = table.set_column(table.schema.get_field_index("node"), "node", hosts.take(pa.array(node)))
    return table.set_column(
        table.schema.get_field_index("ts"), "ts", pa.array(ts_us, pa.int64()).cast(pa.timestamp("us"))
    )


def build(path: Path, nodes: int, minutes: int, keyframe_ticks: int | None, progress=None) -> datetime:
    """Fill a store at ``path``; returns the start of the timed slice (``minutes`` from it are filled)."""

    first = floor_to(datetime.now(UTC).replace(tzinfo=None), 60) - timedelta(
        minutes=LEAD_MINUTES + minutes + 1
    )
    seconds = (LEAD_MINUTES + minutes) * 60
    one = sampled_node(seconds, first, keyframe_ticks)
    cat = load()
    store = Store(path, cat)
    try:
        for m in range(LEAD_MINUTES + minutes):
            lo, hi = first + timedelta(minutes=m), first + timedelta(minutes=m + 1)
            for name, table in one.items():
                ts = table.column("ts")
                keep = pa.compute.and_(
                    pa.compute.greater_equal(ts, pa.scalar(lo)), pc.less(ts, pa.scalar(hi))
                )
                store.commit([PendingBatch("", 0, cat[name], _for_nodes(table.filter(keep), nodes))])
            if progress:
                progress(1)
        store.checkpoint()
    finally:
        store.close()
    return first + timedelta(minutes=LEAD_MINUTES)


def same_rows(a: pa.Table, b: pa.Table, keys: list[str]) -> bool:
    """True when two rollup tables hold the same rows (floats to 1e-9 relative), whatever their order."""
    if a.num_rows != b.num_rows or a.schema != b.schema:
        return False
    order = [(k, "ascending") for k in ["ts", *keys]]
    a, b = a.sort_by(order), b.sort_by(order)
    for name in a.column_names:
        x, y = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        if not np.array_equal(np.asarray(x.is_null()), np.asarray(y.is_null())):
            return False
        if pa.types.is_floating(x.type):
            xv, yv = x.fill_null(0).to_numpy(), y.fill_null(0).to_numpy()
            if not np.allclose(xv, yv, rtol=1e-9, atol=1e-9):
                return False
        elif not x.equals(y):
            return False
    return True


def _best_s(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _alternating(ways: dict, repeat: int) -> tuple[dict, dict]:
    """Each of ``ways`` (name -> a call giving rollup rows) run once per round, ``repeat`` rounds, in turn (so a
    burst of load on the host hits all alike): the best seconds of each, and the rows of its last run."""
    best = {way: float("inf") for way in ways}
    rows: dict = {}
    for _ in range(repeat):
        for way, fn in ways.items():
            s, rows[way] = _best_s(fn, 1)
            best[way] = min(best[way], s)
    return best, rows


def measure(path: Path, start: datetime, minutes: int, repeat: int) -> dict:
    """Time each path on the slice [start, start + minutes), old and new alternating; rows/s per table."""

    cat = load()
    end = start + timedelta(minutes=minutes)
    view, wide = cat.shape("nvlink_samples"), cat["nvlink_gpu_samples"]
    target = cat["nvlink_samples_1m"]
    store = Store(path, cat)
    out: dict = {}
    try:
        cur = store.cursor()
        rng = f"ts >= TIMESTAMP '{start.isoformat(sep=' ')}' AND ts < TIMESTAMP '{end.isoformat(sep=' ')}'"
        links = cur.execute(f"SELECT sum(len(link)) FROM nvlink_gpu_samples WHERE {rng}").fetchone()[0]
        gpus = cur.execute(f"SELECT count(*) FROM gpu_samples WHERE {rng}").fetchone()[0]
        best, rows = _alternating(
            {
                "view": lambda: view_minute_rows(cur, view, start, end, 60, target, wide),
                "wide": lambda: wide_minute_rows(cur, view, wide, start, end, 60, target),
            },
            repeat,
        )
        old_s, new_s, old, new = best["view"], best["wide"], rows["view"], rows["wide"]
        step = Step(cat["gpu_samples"], "1m")
        gpu_s, _ = _best_s(lambda: step.compute(cur, start, end, cat[step.target]), repeat)
        lookback = _lookback_cut(cur, cat, start, end, repeat)
        chunks = _wide_chunks(cur, cat, start, end, repeat)
        matrices = wide_matrices(cur, cat, start, end, repeat)
        cur.close()
    finally:
        store.close()
    offered_links = OFFERED_NODES * GPUS * LINKS
    out["nvlink_samples"] = {
        "raw_rows": int(links),
        "view_s": round(old_s, 3),
        "wide_s": round(new_s, 3),
        "view_rows_per_s": round(links / old_s),
        "wide_rows_per_s": round(links / new_s),
        "speedup": round(old_s / new_s, 2),
        "same_rows": new is not None and same_rows(old, new, list(rollup_keys(view))),
        "offered_rows_per_s_at_1000_nodes": offered_links,
        "wide_over_offered": round(links / new_s / offered_links, 2),
    }
    out["lookback_cut"] = lookback
    out["nvlink_chunks"] = chunks
    out["nvlink_matrices"] = matrices
    out["gpu_samples"] = {
        "raw_rows": int(gpus),
        "seconds": round(gpu_s, 3),
        "rows_per_s": round(gpus / gpu_s),
        "offered_rows_per_s_at_1000_nodes": OFFERED_NODES * GPUS,
    }
    return out


def _lookback_cut(cur, cat, start: datetime, end: datetime, repeat: int) -> dict:
    """Per path, the slice rolled reading the whole rate look-back and only its rows the first rates need
    (``c4.collector.rollup_lookback``), alternating: seconds, look-back rows read, and whether the rollup
    rows are the same."""
    view, wide, target = cat.shape("nvlink_samples"), cat["nvlink_gpu_samples"], cat["nvlink_samples_1m"]
    gpu, gpu_target = cat["gpu_samples"], cat["gpu_samples_1m"]
    paths = {
        "nvlink_samples_wide": (
            lambda cut: wide_minute_rows(cur, view, wide, start, end, 60, target, cut),
            lambda cut: r.wide_sql(view, wide, start, end, cut),
            list(rollup_keys(view)),
        ),
        "gpu_samples": (
            lambda cut: view_minute_rows(cur, gpu, start, end, 60, gpu_target, lookback_cut=cut),
            lambda cut: r.raw_sql(gpu, start, end, lookback_cut=cut),
            list(rollup_keys(gpu)),
        ),
    }
    out = {}
    for name, (compute, sql, keys) in paths.items():
        best, rows = _alternating({cut: functools.partial(compute, cut) for cut in (False, True)}, repeat)
        read = {cut: cur.execute(f"SELECT count(*) FROM ({sql(cut)})").fetchone()[0] for cut in (False, True)}
        out[name] = {
            "whole_s": round(best[False], 3),
            "cut_s": round(best[True], 3),
            "speedup": round(best[False] / best[True], 2),
            "rows_read_whole": int(read[False]),
            "rows_read_cut": int(read[True]),
            "same_rows": same_rows(rows[False], rows[True], keys),
        }
    return out


#: The wide path's chunk size before ``WIDE_ROWS_PER_CHUNK`` was lowered, timed beside it.
WIDE_ROWS_PER_CHUNK_BEFORE = 20_000


def _wide_with(cur, cat, start: datetime, end: datetime, repeat: int, setting: str, values: dict) -> tuple:
    """NVLink's wide path with the rollup module's ``setting`` at each of ``values`` (way -> value), in turn
    (``_alternating``): the best seconds and the rows of each way; the setting is restored after."""
    view, wide, target = cat.shape("nvlink_samples"), cat["nvlink_gpu_samples"], cat["nvlink_samples_1m"]
    was = getattr(r, setting)

    def with_value(value):
        setattr(r, setting, value)
        return wide_minute_rows(cur, view, wide, start, end, 60, target)

    try:
        return _alternating({way: functools.partial(with_value, v) for way, v in values.items()}, repeat)
    finally:
        setattr(r, setting, was)


def _wide_chunks(cur, cat, start: datetime, end: datetime, repeat: int) -> dict:
    """NVLink's wide path computed in chunks of ``WIDE_ROWS_PER_CHUNK_BEFORE`` rows and of
    ``WIDE_ROWS_PER_CHUNK`` (now), alternating: seconds each and whether the rollup rows are the same."""
    now_rows = r.WIDE_ROWS_PER_CHUNK
    sizes = {"before": WIDE_ROWS_PER_CHUNK_BEFORE, "now": now_rows}
    best, rows = _wide_with(cur, cat, start, end, repeat, "WIDE_ROWS_PER_CHUNK", sizes)
    return {
        "rows_before": WIDE_ROWS_PER_CHUNK_BEFORE,
        "rows_now": now_rows,
        "before_s": round(best["before"], 3),
        "now_s": round(best["now"], 3),
        "speedup": round(best["before"] / best["now"], 2),
        "same_rows": same_rows(rows["before"], rows["now"], list(rollup_keys(cat.shape("nvlink_samples")))),
    }


def wide_matrices(cur, cat, start: datetime, end: datetime, repeat: int) -> dict:
    """NVLink's wide path with every chunk flattened to per-link samples (``c4.collector.rollup_wide``, before)
    and computed on rows x links matrices where the layout allows (``c4.collector.rollup_matrix``, now),
    alternating: seconds each and whether the rollup rows are the same."""
    ways = {"flattened": False, "matrices": True}
    best, rows = _wide_with(cur, cat, start, end, repeat, "MATRIX_PATH", ways)
    return {
        "flattened_s": round(best["flattened"], 3),
        "matrices_s": round(best["matrices"], 3),
        "speedup": round(best["flattened"] / best["matrices"], 2),
        "rollup_rows": rows["matrices"].num_rows,
        "same_rows": same_rows(
            rows["flattened"], rows["matrices"], list(rollup_keys(cat.shape("nvlink_samples")))
        ),
    }


def fullest_minute(cur) -> datetime | None:
    """The minute with the most NVLink wide rows in a store (a load run's: its whole minutes), None if none."""
    row = cur.execute(
        "SELECT time_bucket(INTERVAL '1 minute', ts) AS m FROM nvlink_gpu_samples GROUP BY m "
        "ORDER BY count(*) DESC, m LIMIT 1"
    ).fetchone()
    return row[0] if row else None


def measure_store(path: Path, repeat: int) -> dict:
    """On an existing store (opened read-only, e.g. one ``c4 bench load --workdir`` kept), NVLink's fullest
    minute computed flattened and as matrices (``wide_matrices``), with its GPUs and links."""
    cat = load()
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute(f"SET threads = {default_store_threads()}")  # as many as the collector's store uses here
        cur = con.cursor()
        start = fullest_minute(cur)
        if start is None:
            raise ValueError("no nvlink_gpu_samples rows to roll up")
        end = start + timedelta(minutes=1)
        rng = f"ts >= TIMESTAMP '{start.isoformat(sep=' ')}' AND ts < TIMESTAMP '{end.isoformat(sep=' ')}'"
        gpus, links = cur.execute(
            f"SELECT count(DISTINCT (node, gpu_index)), sum(len(link)) FROM nvlink_gpu_samples WHERE {rng}"
        ).fetchone()
        out = {"minute": start.isoformat(), "gpus": int(gpus), "raw_rows": int(links or 0)}
        out |= wide_matrices(cur, cat, start, end, repeat)
        cur.close()
    finally:
        con.close()
    return out


def alternatives(path: Path, start: datetime, repeat: int) -> dict:
    """On the first minute of the slice, side by side: the wide rows flattened (and filled) in numpy vs DuckDB's
    UNNEST of the same rows (no fill), and the per-minute statistics of the per-link samples with numpy's
    reduceat vs one DuckDB GROUP BY over the same arrays (its Arrow input built beforehand, not timed)."""

    cat = load()
    view, wide = cat.shape("nvlink_samples"), cat["nvlink_gpu_samples"]
    end = start + timedelta(minutes=1)
    names = r.wide_columns(view)
    lookback_us = r.epoch_us(start - timedelta(seconds=r.RATE_LOOKBACK_S))
    store = Store(path, cat)
    try:
        cur = store.cursor()
        sql = r.wide_sql(view, wide, start, end)

        def numpy_flatten():
            rows = cur.execute(sql).to_arrow_table()
            return rows, element_samples(rows, wide, r.entity_starts(rows, wide.keys), lookback_us, names)

        unnest = ", ".join(f'unnest("{n}") AS "{n}"' for n in ["link", *names])
        duck_sql = f"SELECT ts, node, gpu_index, {unnest} FROM ({sql}) ORDER BY node, gpu_index, link, ts"
        numpy_s, (rows, s) = _best_s(numpy_flatten, repeat)
        duck_s, _ = _best_s(lambda: cur.execute(duck_sql).to_arrow_table(), repeat)
        ts = s.ts_us
        keep = np.flatnonzero(ts >= r.epoch_us(start))
        entity_start = r.entity_starts_at(s.new_element)
        rates = {
            c.name: r.counter_rates(ts, entity_start, *s.values[c.name], c.wrap_bits, keep)
            for c in view.counters
            if s.values[c.name][1].any()
        }
        gauges = {
            g.name: np.where(s.values[g.name][1][keep], s.values[g.name][0][keep].astype(np.float64), np.nan)
            for g in rolled_gauges(view)
            if s.values[g.name][1].any()
        }
        element = np.cumsum(s.new_element)[keep]
        new_group = np.ones(len(element), bool)
        new_group[1:] = element[1:] != element[:-1]
        at_row, key = pa.array(s.row[keep]), pa.array(s.key[keep], s.key_type)

        def keys_at(at):
            return {
                "node": rows.column("node").take(at_row.take(pa.array(at))),
                "gpu_index": rows.column("gpu_index").take(at_row.take(pa.array(at))),
                "link": key.take(pa.array(at)),
            }

        target = cat["nvlink_samples_1m"]
        all_gauges = {g.name: gauges.get(g.name) for g in rolled_gauges(view)}
        all_rates = {c.name: rates.get(c.name) for c in view.counters}
        reduce_s, _ = _best_s(
            lambda: r.bucket_table(ts[keep], new_group, keys_at, all_gauges, all_rates, 60, target), repeat
        )
        cols = {
            "ts": pa.array(ts[keep]).cast(pa.timestamp("us")),
            "node": rows.column("node").take(at_row),
            "gpu_index": rows.column("gpu_index").take(at_row),
            "link": key,
        }
        aggs = ["count(*)"]
        for name, v in gauges.items():
            cols[name] = pa.array(v, mask=np.isnan(v))
        for name, (inc, dt, rate) in rates.items():
            cols[f"{name}_rate"] = pa.array(rate, mask=np.isnan(rate))
            cols[f"{name}_inc"] = pa.array(inc, mask=np.isnan(inc))
            cols[f"{name}_dt"] = pa.array(dt, mask=np.isnan(dt))
            aggs += [f'sum("{name}_inc")', f'sum("{name}_dt")']
        for name in [*gauges, *(f"{n}_rate" for n in rates)]:
            v = f'"{name}"'
            aggs += [
                f"min({v})",
                f"avg({v})",
                f"max({v})",
                f"arg_max({v}, ts) FILTER (WHERE {v} IS NOT NULL)",
            ]
            aggs.append(f"count({v})")
        cur.register("_c4_bench_per_link", pa.table(cols))
        group_sql = (
            f"SELECT time_bucket(INTERVAL 60 SECOND, ts) AS b, node, gpu_index, link, {', '.join(aggs)} "
            "FROM _c4_bench_per_link GROUP BY ALL"
        )
        group_s, _ = _best_s(lambda: cur.execute(group_sql).to_arrow_table(), repeat)
        cur.close()
    finally:
        store.close()
    return {
        "per_link_samples": len(ts),
        "flatten_numpy_s": round(numpy_s, 3),
        "flatten_duckdb_unnest_s": round(duck_s, 3),
        "stats_samples": len(keep),
        "stats_numpy_s": round(reduce_s, 3),
        "stats_duckdb_group_by_s": round(group_s, 3),
    }


def _first_pass_in_this_process(path: str, start: datetime, minutes: int, rows_per_chunk: int) -> dict:
    """Time ``gpu_samples``' minute rollup computed once in this (fresh) process: wall, user and kernel CPU."""
    cat = load()
    store = Store(Path(path), cat)
    try:
        cur = store.cursor()
        if rows_per_chunk == WHOLE_SLICE:  # one chunk of every row read (the look-back's included)
            lookback = start - timedelta(seconds=r.RATE_LOOKBACK_S)
            end = start + timedelta(minutes=minutes)
            rows_per_chunk = max(
                1,
                cur.execute(
                    "SELECT count(*) FROM gpu_samples WHERE ts >= ? AND ts < ?", [lookback, end]
                ).fetchone()[0],
            )
        r.ROWS_PER_CHUNK = rows_per_chunk
        step = Step(cat["gpu_samples"], "1m")
        before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        rows = step.compute(cur, start, start + timedelta(minutes=minutes), cat[step.target])
        wall_s, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        cur.close()
    finally:
        store.close()
    return {
        "wall_s": wall_s,
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
        "rollup_rows": rows.num_rows,
    }


#: Stands for as many rows per chunk as the slice reads: the raw path as it was, one table of the whole slice.
WHOLE_SLICE = 0


def first_pass(path: Path, start: datetime, minutes: int, repeat: int) -> dict:
    """``gpu_samples``' rollup of the slice as one table (as it was) vs in chunks of whole GPUs (as now), each
    the first pass of a fresh process (as in a collector's first minutes, or after its memory was given back),
    alternating; the best of ``max(repeat, 3)`` each, with its user and kernel CPU (fresh pages faulted in
    count as kernel time)."""
    ctx = multiprocessing.get_context("spawn")
    ways = {"one_table": WHOLE_SLICE, "chunked": r.ROWS_PER_CHUNK}
    runs: dict[str, list[dict]] = {way: [] for way in ways}
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        for _ in range(max(repeat, 3)):  # one pass each is within this host's noise; three are not
            for way, chunk in ways.items():
                runs[way].append(pool.apply(_first_pass_in_this_process, (str(path), start, minutes, chunk)))
    best = {way: min(rs, key=lambda x: x["wall_s"]) for way, rs in runs.items()}
    out: dict = {way: {k: round(v, 3) for k, v in b.items()} for way, b in best.items()}
    # as many rollup rows each way (their values are checked equal by tests/collector/test_rollup.py)
    out["same_rollup_rows"] = len({run["rollup_rows"] for rs in runs.values() for run in rs}) == 1
    out["rows_per_chunk"] = r.ROWS_PER_CHUNK
    out["speedup"] = round(best["one_table"]["wall_s"] / best["chunked"]["wall_s"], 2)
    return out
