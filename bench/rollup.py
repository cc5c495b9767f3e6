"""``c4 bench rollup``: the collector's minute-rollup compute, in raw rows per second, per rolled table.

A store is filled with N nodes' minutes of real sampler rows: the agent's GPU sampler over a fake NVML of
8-GPU H100 nodes (18 NVLinks each; error counters that move now and then, sent on change and on keyframes)
samples one node tick by tick, and its ``gpu_samples`` and wide ``nvlink_gpu_samples`` rows are repeated for
every node (node name changed, 1 ms apart) and committed through the collector's own Store. Then, side by
side on the same slice of minutes: NVLink per link from the bounded per-element view (the old path) and from
the wide rows directly (``c4.collector.rollup_wide``, what the collector runs), the two checked equal, and
``gpu_samples`` for scale. Reported: per-link rows/s of each path and what 1,000 such nodes offer.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

HELP = "Rollup compute rows/s per table on real sampler rows: NVLink from the wide rows vs from the per-element view."

GPUS = 8
LINKS = 18  # an H100's NVLinks
#: Minutes built before the timed slice: the rate look-back and the on-change fill's keyframe period.
LEAD_MINUTES = 3
#: Nodes the offered rate is given for (the fleet size the rollup has to keep up with).
OFFERED_NODES = 1000


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``c4 bench rollup``."""
    parser.add_argument("--nodes", type=int, default=200, help="8-GPU nodes in the store (default 200)")
    parser.add_argument(
        "--minutes", type=int, default=2, help="minutes rolled in the timed slice (default 2)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs of each path; the best is kept (default 3)"
    )
    parser.add_argument(
        "--keyframe-ticks",
        type=int,
        default=None,
        help="ticks between NVLink keyframes (default: the agent's)",
    )
    parser.add_argument("--workdir", help="keep the store here (default: a temporary directory)")


def _drive(sc: dict, tick: int) -> None:
    """Error counters that move now and then on a few links, as a healthy busy node's do."""
    gpus = sc["gpus"]
    if tick % 41 == 7:
        gpus[1]["link_counters"]["3"] = {"replay_errors": tick, "recovery_errors": tick // 41}
    if tick % 97 == 13:
        gpus[5]["link_counters"]["11"] = {"link_crc_errors": 2 * tick}


def sampled_node(seconds: int, start: datetime, keyframe_ticks: int | None) -> dict[str, pa.Table]:
    """One node's rows per table for ``seconds`` ticks from ``start``, from the real GPU sampler."""
    from c4.agent.batcher import rows_to_table
    from c4.agent.gpu import KEYFRAME_TICKS, GpuSampler
    from c4.agent.nvml import Nvml
    from c4.catalogue import load
    from c4.sim.fake_nvml import FakeNvml, eight_gpu_scenario

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
    from c4.catalogue import load
    from c4.collector.rollup import floor_to
    from c4.collector.store import PendingBatch, Store

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
                    pa.compute.greater_equal(ts, pa.scalar(lo)), pa.compute.less(ts, pa.scalar(hi))
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


def measure(path: Path, start: datetime, minutes: int, repeat: int) -> dict:
    """Time each path on the slice [start, start + minutes), old and new alternating; rows/s per table."""
    from c4.catalogue import load
    from c4.catalogue.rollup import rollup_keys
    from c4.collector.rollup import Step, view_minute_rows, wide_minute_rows
    from c4.collector.store import Store

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
        old_s = new_s = float("inf")
        old = new = None
        for _ in range(repeat):  # alternate, so a burst of load on the host hits both paths alike
            s, old = _best_s(lambda: view_minute_rows(cur, view, start, end, 60, target, wide), 1)
            old_s = min(old_s, s)
            s, new = _best_s(lambda: wide_minute_rows(cur, view, wide, start, end, 60, target), 1)
            new_s = min(new_s, s)
        step = Step(cat["gpu_samples"], "1m")
        gpu_s, _ = _best_s(lambda: step.compute(cur, start, end, cat[step.target]), repeat)
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
    out["gpu_samples"] = {
        "raw_rows": int(gpus),
        "seconds": round(gpu_s, 3),
        "rows_per_s": round(gpus / gpu_s),
        "offered_rows_per_s_at_1000_nodes": OFFERED_NODES * GPUS,
    }
    return out


def run(args: argparse.Namespace) -> int:
    """Build the store, time the paths, print the table (and JSON)."""
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(prefix="c4-bench-rollup-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        db = workdir / "c4.duckdb"
        db.unlink(missing_ok=True)
        t0 = time.perf_counter()
        with tqdm(total=LEAD_MINUTES + args.minutes, unit="min", desc="building store", disable=None) as bar:
            start = build(db, args.nodes, args.minutes, args.keyframe_ticks, progress=bar.update)
        built_s = time.perf_counter() - t0
        tables = measure(db, start, args.minutes, args.repeat)
    result = {
        "nodes": args.nodes,
        "minutes": args.minutes,
        "build_s": round(built_s, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "tables": tables,
    }
    nv, gpu = tables["nvlink_samples"], tables["gpu_samples"]
    print(
        f"rollup compute, {args.nodes} nodes x {GPUS} GPUs, {args.minutes} min slice (load {result['load_avg_1m']})"
    )
    print(f"{'table / path':<34}{'raw rows':>12}{'seconds':>10}{'rows/s':>12}{'offered@1000':>14}")
    print(
        f"{'nvlink_samples, per-element view':<34}{nv['raw_rows']:>12,}{nv['view_s']:>10.3f}"
        f"{nv['view_rows_per_s']:>12,}{nv['offered_rows_per_s_at_1000_nodes']:>14,}"
    )
    print(
        f"{'nvlink_samples, wide rows':<34}{nv['raw_rows']:>12,}{nv['wide_s']:>10.3f}"
        f"{nv['wide_rows_per_s']:>12,}{nv['offered_rows_per_s_at_1000_nodes']:>14,}"
    )
    print(
        f"{'gpu_samples':<34}{gpu['raw_rows']:>12,}{gpu['seconds']:>10.3f}"
        f"{gpu['rows_per_s']:>12,}{gpu['offered_rows_per_s_at_1000_nodes']:>14,}"
    )
    print(
        f"wide vs view: x{nv['speedup']} (same rows: {nv['same_rows']}); wide path at "
        f"{nv['wide_over_offered']}x what 1,000 nodes offer"
    )
    if args.json:
        print(json.dumps(result))
    return 0 if nv["same_rows"] else 1
