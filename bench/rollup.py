"""``c4 bench rollup``: the collector's minute-rollup compute, in raw rows per second, per rolled table.

A store is filled with N nodes' minutes of real sampler rows: the agent's GPU sampler over a fake NVML of
8-GPU H100 nodes (18 NVLinks each; error counters that move now and then, sent on change and on keyframes)
samples one node tick by tick, and its ``gpu_samples`` and wide ``nvlink_gpu_samples`` rows are repeated for
every node (node name changed, 1 ms apart) and committed through the collector's own Store. Then, side by
side on the same slice of minutes: NVLink per link from the bounded per-element view (the old path) and from
the wide rows directly (``c4.collector.rollup_wide``, what the collector runs), the two checked equal, and
``gpu_samples`` for scale. Reported: per-link rows/s of each path and what 1,000 such nodes offer. Then
``gpu_samples``' slice computed as one table (the raw path as it was) and in chunks of whole GPUs (as now),
each as the first pass of a fresh process, alternating: wall time, user and kernel CPU. Last, both paths
reading the whole rate look-back against only the rows its first rates need (``c4.collector.rollup_lookback``),
alternating, their rollup rows checked equal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HELP = (
    "Rollup compute rows/s per table on real sampler rows: NVLink from the wide rows vs from the per-element "
    "view; gpu_samples as one table vs in chunks of whole GPUs, each a fresh process's first pass."
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``c4 bench rollup``."""
    parser.add_argument("--nodes", type=int, default=100, help="8-GPU nodes in the store (default 100)")
    parser.add_argument(
        "--minutes",
        type=int,
        default=1,
        help="minutes rolled in the timed slice (default 1: what the collector rolls each rollup_interval_s)",
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
    parser.add_argument(
        "--store",
        help="instead of building a store, time only NVLink's wide path flattened vs as matrices on the fullest "
        "minute of this existing store, opened read-only (e.g. the c4.duckdb a `c4 bench load --workdir` run kept)",
    )
    parser.add_argument(
        "--alternatives",
        action="store_true",
        help="also time DuckDB doing parts of the wide path: UNNEST for the flatten, GROUP BY for the statistics",
    )


def run(args: argparse.Namespace) -> int:
    """Build the store, time the paths, print the table (and JSON)."""
    from tqdm import tqdm

    from c4.bench.rollup_store import GPUS, LEAD_MINUTES, alternatives, build, first_pass, measure

    if args.nodes < 1 or args.minutes < 1 or args.repeat < 1 or (args.keyframe_ticks or 1) < 1:
        print(
            "c4 bench rollup: --nodes, --minutes, --repeat and --keyframe-ticks must be >= 1", file=sys.stderr
        )
        return 2

    if args.store:
        return _run_on_store(args)
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
        tables["gpu_samples"]["first_pass"] = first_pass(db, start, args.minutes, args.repeat)
        other = alternatives(db, start, args.repeat) if args.alternatives else None
    result = {
        "nodes": args.nodes,
        "minutes": args.minutes,
        "build_s": round(built_s, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "tables": tables,
    }
    if other:
        result["alternatives"] = other
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
    fp = gpu["first_pass"]
    print(f"gpu_samples, first pass in a fresh process (chunks of {fp['rows_per_chunk']:,} rows):")
    for way, label in (
        ("one_table", "one table (before)"),
        ("chunked", "chunks of whole GPUs (now)"),
    ):
        w = fp[way]
        print(f"  {label:<38}{w['wall_s']:>8.3f} s  user {w['user_s']:.3f}  kernel {w['sys_s']:.3f}")
    print(f"  before / now: x{fp['speedup']} (as many rollup rows: {fp['same_rollup_rows']})")
    print(
        f"wide vs view: x{nv['speedup']} (same rows: {nv['same_rows']}); wide path at "
        f"{nv['wide_over_offered']}x what 1,000 nodes offer"
    )
    for name, lb in tables["lookback_cut"].items():
        print(
            f"look-back cut, {name}: whole {lb['whole_s']:.3f} s ({lb['rows_read_whole']:,} rows read), "
            f"cut {lb['cut_s']:.3f} s ({lb['rows_read_cut']:,}): x{lb['speedup']} (same rows: {lb['same_rows']})"
        )
    ch = tables["nvlink_chunks"]
    print(
        f"NVLink wide rows in chunks of {ch['rows_before']:,} (before) {ch['before_s']:.3f} s, of "
        f"{ch['rows_now']:,} (now) {ch['now_s']:.3f} s: x{ch['speedup']} (same rows: {ch['same_rows']})"
    )
    _print_matrices(tables["nvlink_matrices"])
    if other:
        print(
            f"flatten {other['per_link_samples']:,} per-link samples: numpy (with the fill) "
            f"{other['flatten_numpy_s']:.3f} s, DuckDB UNNEST (no fill) {other['flatten_duckdb_unnest_s']:.3f} s; "
            f"statistics of {other['stats_samples']:,}: numpy {other['stats_numpy_s']:.3f} s, "
            f"DuckDB GROUP BY {other['stats_duckdb_group_by_s']:.3f} s"
        )
    if args.json:
        print(json.dumps(result))
    same = all(lb["same_rows"] for lb in tables["lookback_cut"].values()) and ch["same_rows"]
    same = same and tables["nvlink_matrices"]["same_rows"]
    return 0 if nv["same_rows"] and fp["same_rollup_rows"] and same else 1


def _print_matrices(m: dict) -> None:
    print(
        f"NVLink wide rows flattened to per-link samples (before) {m['flattened_s']:.3f} s, as rows x links "
        f"matrices (now) {m['matrices_s']:.3f} s: x{m['speedup']} (same rows: {m['same_rows']})"
    )


def _run_on_store(args: argparse.Namespace) -> int:
    """``--store``: the flattened vs matrices timing on an existing store's fullest NVLink minute."""
    from c4.bench.rollup_store import measure_store

    path = Path(args.store)
    if not path.is_file():
        print(f"c4 bench rollup: --store {path}: no such file", file=sys.stderr)
        return 2
    try:
        result = measure_store(path, args.repeat)
    except Exception as exc:  # not a DuckDB file, no NVLink table, locked by a running collector
        print(f"c4 bench rollup: --store {path}: {exc}", file=sys.stderr)
        return 2
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(
        f"NVLink rollup of {path}, minute {result['minute']}: {result['gpus']:,} GPUs, "
        f"{result['raw_rows']:,} per-link samples (load {result['load_avg_1m']})"
    )
    _print_matrices(result)
    if args.json:
        print(json.dumps({"store": str(path), **result}))
    return 0 if result["same_rows"] else 1
