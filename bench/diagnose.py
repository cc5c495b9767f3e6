"""``c4 bench diagnose``: C4D scored on the twin's seeded scenario library, and timed on a 10,000-rank minute."""

from __future__ import annotations

import argparse

HELP = (
    "C4D accuracy and speed: precision/recall per fault kind over seeded twin scenarios (real samplers, "
    "collector ingest, analytics in one process), false alarms on negatives, time to detect, 10k-rank analysis time."
)

QUICK_KINDS = (
    "job_slow_worker",
    "job_stage_imbalance",
    "job_hang",
    "nic_degraded",
    "xid79",
    "rank_hang",
    "spine_link_degraded",
    "straggler",
    "straggler_verbose",
    "healthy",
    "transient_slowdown",
)
#: Straggler scenario kinds by the NCCL Inspector form they write (default: no start times; verbose: with).
STRAGGLER_FORMS = {"default": "straggler", "verbose": "straggler_verbose"}


def configure(parser: argparse.ArgumentParser) -> None:
    """Library size and parallelism."""
    parser.add_argument(
        "--nodes",
        type=int,
        default=None,
        help="cluster size of every scenario, x8 GPUs x8 NICs (default 32; 16 quick)",
    )
    parser.add_argument(
        "--kinds", default="", help="comma-separated fault/negative kinds to run (default: all)"
    )
    parser.add_argument("--per-kind", type=int, default=6, help="seeded scenarios per fault kind")
    parser.add_argument("--negatives", type=int, default=5, help="seeded scenarios per negative kind")
    parser.add_argument("--seed", type=int, default=0, help="first seed of the library")
    parser.add_argument("--jobs", type=int, default=0, help="worker processes (default: the CPU count)")
    parser.add_argument(
        "--ranks", type=int, default=10_000, help="ranks of the synthetic minute timed for analysis"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"one 16-node scenario of each of {', '.join(QUICK_KINDS)} (a few minutes on 2 cores)",
    )
    parser.add_argument("--verbose", action="store_true", help="print every scenario's raised faults")
    parser.add_argument(
        "--flush-s",
        type=float,
        default=0.0,
        help="each node's rows reach the store every this many simulated seconds, at a phase of its own, as "
        "agents with flush_interval_s deliver; C4D looks that far behind (default 0: every tick at once)",
    )
    parser.add_argument(
        "--delivery-lag-s",
        type=float,
        default=None,
        help="how far behind the clock C4D looks (default: --flush-s); 0 with --flush-s shows what uneven "
        "delivery does to a C4D that does not wait for it",
    )
    parser.add_argument(
        "--no-step-trace",
        action="store_true",
        help="jobs scenarios export no training-step trace: C4D judges them from NCCL Inspector alone",
    )


def _percentile(values: list[float], q: float) -> float | None:
    import numpy as np

    return float(np.percentile(values, q)) if values else None


def score(results: list) -> tuple[list[dict], dict]:
    """Per-kind rows and the overall figures from scenario results."""
    kinds: dict[str, list] = {}
    for r in results:
        kinds.setdefault(r.kind, []).append(r)
    rows = []
    per_kind = {}
    for kind, rs in kinds.items():
        raised = sum(len(r.raised) for r in rs)
        correct = sum(sum(r.correct) for r in rs)
        negative = rs[0].negative
        detected = [r for r in rs if r.ttd_s is not None]
        ttds = [r.ttd_s for r in detected]
        onset_errs = [abs(e) for r in rs for e in r.onset_errors_s]
        row = {
            "kind": kind,
            "scenarios": len(rs),
            "raised": raised,
            "correct": correct,
            "precision": (correct / raised) if raised else (None if negative else 1.0),
            "recall": None if negative else len(detected) / len(rs),
            "false_alarms": raised if negative else raised - correct,
            "ttd_p50_s": _percentile(ttds, 50),
            "ttd_max_s": max(ttds) if ttds else None,
            "onset_err_max_s": max(onset_errs) if onset_errs else None,
            "victims_blamed": sum(r.victims_blamed for r in rs),
            "slowdown_err_max": max(errs)
            if (errs := [r.slowdown_error for r in rs if r.slowdown_error is not None])
            else None,
        }
        rows.append(row)
        if not negative:  # time to detect per kind: what `c4 bench downtime --diagnose-json` reads
            per_kind[kind] = {
                "precision": row["precision"],
                "recall": row["recall"],
                "ttd_p50_s": row["ttd_p50_s"],
                "ttd_p90_s": _percentile(ttds, 90),
            }
    pos = [r for r in results if not r.negative]
    neg = [r for r in results if r.negative]
    raised = sum(len(r.raised) for r in results)
    correct = sum(sum(r.correct) for r in results)
    ttds = [r.ttd_s for r in pos if r.ttd_s is not None]
    onset_errs = [abs(e) for r in pos for e in r.onset_errors_s]
    slow_errs = [r.slowdown_error for r in pos if r.slowdown_error is not None]
    summary = {
        "scenarios": len(results),
        "positive_scenarios": len(pos),
        "negative_scenarios": len(neg),
        "precision": correct / raised if raised else 1.0,
        "recall": len(ttds) / len(pos) if pos else None,
        "false_alarms": sum(len(r.raised) for r in neg),
        "ttd_p50_s": _percentile(ttds, 50),
        "ttd_p90_s": _percentile(ttds, 90),
        "onset_error_p50_s": _percentile(onset_errs, 50),
        "onset_error_p90_s": _percentile(onset_errs, 90),
        "onset_error_max_s": max(onset_errs) if onset_errs else None,
        "victims_blamed": sum(r.victims_blamed for r in results),
        "slowdown_error": _percentile(slow_errs, 50),  # median over scenarios whose finding estimates it
        "slowdown_error_max": max(slow_errs) if slow_errs else None,
        "slowdown_estimated": len(slow_errs),
        "sim_s": sum(r.sim_s for r in results),
        "wall_s": sum(r.wall_s for r in results),
        "per_kind": per_kind,
    }
    return rows, summary


def time_analysis(ranks: int, repeats: int = 3) -> dict:
    """Analysis time of one 60 s window of `ranks` ranks (best of `repeats`), and whether it found the injected faults."""
    import time

    from c4.analytics.diagnose import diagnose
    from c4.bench.diagnose_synth import synth_window

    tables, injected = synth_window(ranks=ranks)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        found = diagnose(tables)
        times.append(time.perf_counter() - t0)
    components = {f.component for f in found}
    return {
        "analysis_s": min(times),
        "analysis_median_s": sorted(times)[len(times) // 2],
        "rows": sum(t.height for t in tables.values()),
        "found_injected": injected <= components,
        "false_components": sorted(components - injected),
    }


def run(args: argparse.Namespace) -> int:
    """Run the library, score it and print the table (and the JSON line)."""
    import json
    import multiprocessing
    import os
    import sys
    import time
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    from c4.bench.diagnose_run import run_scenario
    from c4.bench.diagnose_scenarios import NEGATIVE_KINDS, POSITIVE_KINDS, draw, library
    from c4.report import format_table

    nodes = args.nodes or (16 if args.quick else 32)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = set(kinds) - set(POSITIVE_KINDS) - set(NEGATIVE_KINDS)
    if unknown or nodes < 8 or args.per_kind < 1 or args.flush_s < 0 or (args.delivery_lag_s or 0) < 0:
        print(
            f"c4 bench diagnose: --nodes must be >= 8 (two jobs of 3D parallelism share them), --per-kind >= 1, "
            f"--flush-s and --delivery-lag-s >= 0, --kinds from "
            f"{', '.join(POSITIVE_KINDS + NEGATIVE_KINDS)}"
            + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""),
            file=sys.stderr,
        )
        return 2
    if args.quick:
        scenarios = [draw(k, args.seed, nodes) for k in (kinds or QUICK_KINDS)]
        for sc in scenarios:
            sc.watch_s = 15.0
    else:
        scenarios = library(args.per_kind, args.negatives, nodes, args.seed)
        if kinds:
            scenarios = [sc for sc in scenarios if sc.kind in kinds]
    if args.no_step_trace:
        for sc in scenarios:
            if sc.jobs:
                sc.cluster = {**sc.cluster, "step_trace": False}
    jobs = args.jobs or os.cpu_count() or 1
    t0 = time.perf_counter()
    results = []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = [
            pool.submit(run_scenario, sc, flush_s=args.flush_s, delivery_lag_s=args.delivery_lag_s)
            for sc in scenarios
        ]
        bar = tqdm(total=len(futures), desc="scenarios", disable=not sys.stderr.isatty())
        for fut in as_completed(futures):
            r = fut.result()
            results.append(r)
            bar.update()
            if bar.disable:  # a log, not a terminal: one line per scenario
                print(
                    f"scenario {len(results)}/{len(futures)} {r.scenario}: raised {len(r.raised)}, "
                    f"correct {sum(r.correct)}, ttd {r.ttd_s if r.ttd_s is None else round(r.ttd_s, 1)} s, "
                    f"{r.wall_s:.0f} s wall",
                    file=sys.stderr,
                    flush=True,
                )
        bar.close()
    wall = time.perf_counter() - t0
    results.sort(key=lambda r: r.scenario)
    if args.verbose:
        for r in results:
            print(r.scenario, "truth:", r.truth.get("component", "-"), "ttd:", r.ttd_s)
            for x, ok in zip(r.raised, r.correct, strict=True):
                err = x["onset_error_s"]
                onset = "no onset" if err is None else f"onset error {err:+.1f}s"
                print("   ", "ok " if ok else "BAD", x["fault_id"], f"at {x['at_s']:.1f}s", onset)
    rows, summary = score(results)
    analysis = time_analysis(args.ranks)
    print(format_table(rows))
    print()
    print(
        f"{summary['scenarios']} scenarios ({summary['positive_scenarios']} faults, {summary['negative_scenarios']} "
        f"negatives) on {nodes} nodes x 8 GPUs: precision {summary['precision']:.3f}, "
        f"recall {summary['recall']:.3f}, false alarms {summary['false_alarms']}, time to detect p50 "
        f"{summary['ttd_p50_s'] or 0:.1f} s / p90 {summary['ttd_p90_s'] or 0:.1f} s (simulated, 1 s sampling), "
        f"onset error (|first_seen - true onset|) p50 {summary['onset_error_p50_s'] or 0:.1f} s / max "
        f"{summary['onset_error_max_s'] or 0:.1f} s; victims blamed {summary['victims_blamed']}, "
        f"slowdown error median {summary['slowdown_error'] or 0:.3f} ({summary['slowdown_estimated']} estimated)"
    )
    print(
        f"simulated {summary['sim_s']:.0f} s in {wall:.0f} s wall with {jobs} workers "
        f"({summary['sim_s'] / wall:.1f}x real time overall)"
    )
    print(
        f"analysis of a 60 s window of {args.ranks} ranks ({analysis['rows']:,} rows): {analysis['analysis_s']:.3f} s "
        f"(found the injected faults: {analysis['found_injected']})"
    )
    if args.json:
        print(
            json.dumps(
                {
                    **{k: v for k, v in summary.items() if k not in ("sim_s", "wall_s")},
                    "nodes": nodes,
                    "wall_s": wall,
                    "sim_speedup": summary["sim_s"] / wall,
                    "analysis_10k_ranks_s": analysis["analysis_s"],
                    "analysis_ranks": args.ranks,
                    "analysis_found_injected": analysis["found_injected"],
                    "quick": args.quick,
                    "flush_s": args.flush_s,
                    "delivery_lag_s": args.flush_s if args.delivery_lag_s is None else args.delivery_lag_s,
                    "step_trace": not args.no_step_trace,
                    "stragglers": {  # recall of a GPU slowed with no hardware sign, per Inspector form
                        form: summary["per_kind"][kind]
                        for form, kind in STRAGGLER_FORMS.items()
                        if kind in summary["per_kind"]
                    },
                },
                default=float,
            )
        )
    return 0
