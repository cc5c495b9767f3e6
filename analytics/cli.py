"""``c4 diagnose``: offline diagnosis: a stopped store, PyTorch Flight Recorder dumps, or a training-step trace."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from c4.analytics.flight_recorder import find_missing_ranks, load_dir
from c4.report import format_table

HELP = (
    "Diagnose offline: --db FILE runs every C4D detector over a stopped collector's store; "
    "--flight-recorder DIR names the ranks missing from the last collective; both together add the "
    "Flight Recorder's hang verdict to the store's faults, placed on hosts and GPUs from the store; "
    "--trace FILE|DIR attributes a training-step trace's step time to workers, pipeline stages and op types "
    "and names the cause of a slowdown (slow worker, stage or data imbalance, CPU stall, slow communication), "
    "never its victims."
)

TRACE_HELP = (
    "a training-step trace: a *.jsonl or *.parquet file, or a directory of them (e.g. one file per rank), "
    "one record per op per rank with job, rank, dp_rank, pp_stage, tp_rank, step, op, start_s, duration_s "
    "(and microbatch for forward/backward/send/recv when pp > 1); op one of forward, backward, optimizer, "
    "send_forward, recv_forward, send_backward, recv_backward, reduce_scatter, all_gather, all_reduce, "
    "all_to_all, data_load, checkpoint. Format, units and how to write it from a training loop "
    "(c4.step_trace.StepTraceWriter): docs/step-trace.md. A bad record exits 2 naming file, line and column"
)


def configure(parser: argparse.ArgumentParser) -> None:
    """diagnose flags."""
    parser.add_argument(
        "--flight-recorder",
        metavar="DIR",
        help="directory of Flight Recorder dumps (one per rank, pickle or JSON)",
    )
    parser.add_argument("--db", metavar="FILE", help="a stopped collector's DuckDB file")
    parser.add_argument("--trace", metavar="FILE|DIR", help=TRACE_HELP)
    parser.add_argument(
        "--min-steps",
        type=int,
        default=3,
        help="--trace: steps a job needs before causes are named (default 3)",
    )
    parser.add_argument("--window-s", type=float, default=300.0, help="--db: seconds of data to look at")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the store or the Flight Recorder diagnosis (or both)."""
    if getattr(args, "trace", None):
        if args.db or args.flight_recorder:
            print("c4 diagnose: --trace goes alone (not with --db or --flight-recorder)", file=sys.stderr)
            return 2
        return run_trace(args)
    if not args.db and not args.flight_recorder:
        print(
            "c4 diagnose: give --db FILE, --flight-recorder DIR, or both; or --trace FILE|DIR",
            file=sys.stderr,
        )
        return 2
    if args.db:
        return run_db(args)
    return run_flight_recorder(args)


def run_db(args: argparse.Namespace) -> int:
    """Hardware detectors over the last window of a store; one line per fault."""
    import duckdb  # lazy: c4 --help loads this module; ~50 ms

    from c4.analytics.diagnose import diagnose  # lazy: c4 --help loads this module; polars ~120 ms
    from c4.analytics.window import load_from_db  # lazy: c4 --help loads this module; polars, duckdb

    if not Path(args.db).is_file():
        why = "is a directory, not a store file" if Path(args.db).is_dir() else "does not exist"
        print(f"c4 diagnose: {args.db} {why}", file=sys.stderr)
        return 2
    try:
        tables = load_from_db(args.db, args.window_s)
    except duckdb.Error as exc:
        print(f"c4 diagnose: cannot read {args.db}: {exc}", file=sys.stderr)
        return 1
    findings = diagnose(tables)
    if args.flight_recorder:
        from c4.analytics.hang_sources import flight_recorder_findings  # lazy: c4 --help; polars ~120 ms

        if not Path(args.flight_recorder).is_dir():
            print(f"c4 diagnose: {args.flight_recorder} is not a directory", file=sys.stderr)
            return 2
        dumps, problems = load_dir(Path(args.flight_recorder))
        for p in problems:
            print(f"c4 diagnose: skipped {p}", file=sys.stderr)
        from c4.analytics.rank_gpu import RankPlaces  # lazy: c4 --help; polars ~120 ms

        colls = tables.get("nccl_collectives")
        hosts = {}
        if colls is not None and not colls.is_empty():  # a global rank's host, when no identity places it
            hosts = dict(colls.sort("n_ranks").select(["rank", "hostname"]).iter_rows())
        places = RankPlaces(tables.get("rank_identity"), tables.get("gpu_samples"))
        findings += flight_recorder_findings(find_missing_ranks(dumps), places, hosts)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "fault_id": f.fault_id,
                        "class": f.fault_class,
                        "component": f.component,
                        "confidence": f.confidence,
                        "action": f.action,
                        "summary": f.summary,
                        "evidence": f.evidence,
                    }
                    for f in findings
                ],
                default=str,
            )
        )
        return 0
    if not findings:
        print("no faults found")
        return 0
    print(
        format_table(
            [
                {
                    "class": f.fault_class,
                    "component": f.component,
                    "detector": f.detector,
                    "confidence": f.confidence,
                    "action": f.action,
                    "summary": f.summary,
                }
                for f in findings
            ]
        )
    )
    return 0


def run_flight_recorder(args: argparse.Namespace) -> int:
    """Print, per process group, the last collective and the ranks that never entered or never finished it."""
    directory = Path(args.flight_recorder)
    if not directory.is_dir():
        print(f"c4 diagnose: {directory} is not a directory", file=sys.stderr)
        return 2
    dumps, problems = load_dir(directory)
    for p in problems:
        print(f"c4 diagnose: skipped {p}", file=sys.stderr)
    if not dumps:
        print(f"c4 diagnose: no readable Flight Recorder dumps in {directory}", file=sys.stderr)
        return 1
    verdicts = find_missing_ranks(dumps)
    rows = [
        {
            "process_group": v.process_group,
            "last_seq": v.last_seq,
            "op": v.op,
            "ranks": len(v.ranks),
            "missing": ",".join(map(str, v.missing)) or "-",
            "stuck_in_it": ",".join(map(str, v.stuck)) or "-",
            "no_dump": ",".join(map(str, v.no_dump)) or "-",
        }
        for v in verdicts
    ]
    if args.json:
        print(
            json.dumps(
                [
                    {**r, "missing": v.missing, "stuck_in_it": v.stuck, "no_dump": v.no_dump}
                    for r, v in zip(rows, verdicts, strict=True)
                ]
            )
        )
    else:
        print(f"{len(dumps)} rank dumps read from {directory}")
        print(format_table(rows))
        hung = [v for v in verdicts if v.missing]
        for v in hung:
            print(
                f"hang: process group {v.process_group}: ranks {v.missing} never entered collective "
                f"#{v.last_seq} ({v.op}) that ranks {sorted(set(v.ranks) - set(v.missing))} are waiting in"
            )
        for v in verdicts:
            if v.no_dump:
                print(
                    f"note: process group {v.process_group}: members {v.no_dump} (pg_config) left no dump "
                    "here; they may be the hung ranks"
                )
    return 0


def run_trace(args: argparse.Namespace) -> int:
    """Step-time attribution of a training-step trace: per job, actual vs ideal step, costs, causes."""
    from c4.analytics.attribution import attribute  # lazy: c4 --help loads this module; polars, numpy
    from c4.analytics.step_trace import TraceError, read_trace  # lazy: c4 --help loads this module; polars

    try:
        trace = read_trace(args.trace)
    except TraceError as exc:
        print(f"c4 diagnose: {exc}", file=sys.stderr)
        return 2
    jobs = attribute(trace, min_steps=args.min_steps)
    if args.json:
        print(json.dumps({"jobs": [j.as_json() for j in jobs]}, default=str))
        return 0
    for j in jobs:
        print(
            f"job {j.job}: {j.steps} steps ({j.steps_skipped} skipped), step {j.actual_step_s:.4f} s, ideal "
            f"{j.ideal_step_s:.4f} s, slowdown {j.slowdown_frac:.1%}"
        )
        if j.steps < args.min_steps:
            print(f"  fewer than {args.min_steps} steps: no causes named")
        for f in j.findings:
            victims = f" ({len(f.affected)} ranks only waited on it)" if f.affected else ""
            print(f"  {f.fault_class}: {f.component} costs {f.slowdown_frac:.1%}{victims}: {f.summary}")
        if not j.findings and j.steps >= args.min_steps:
            print("  no cause found")
        print(
            format_table(
                [
                    {"by": "worker", "what": f"rank{w['rank']} (stage {w['pp_stage']})", **_cost(w)}
                    for w in j.by_worker[:3]
                ]
                + [{"by": "stage", "what": f"stage{s['pp_stage']}", **_cost(s)} for s in j.by_stage[:3]]
                + [{"by": "op", "what": o["op"], **_cost(o)} for o in j.by_op[:3]]
            )
        )
    return 0


def _cost(d: dict) -> dict:
    return {"cost_s": f"{d['cost_s']:.4f}", "share": f"{d['share']:.1%}"}
