"""``c4 goodput``: each job's ETTR and lost time by category, and the faults that cost the most GPU-hours."""

from __future__ import annotations

import argparse
import json
import os
import sys

from c4.report import format_table, printable_times

HELP = (
    "Per-job goodput (ETTR, lost time by category) and the faults that cost most, from a running collector."
)

#: Columns of the human job table (all are in --json).
JOB_COLUMNS = (
    "job",
    "gpus",
    "runs",
    "wall_s",
    "ettr",
    "hung_s",
    "slowed_s",
    "restarting_s",
    "redone_s",
    "unexplained_s",
    "gpu_hours_lost",
)
FAULT_COLUMNS = (
    "fault_id",
    "job",
    "fault_class",
    "gpu_hours_lost",
    "hung_s",
    "slowed_s",
    "restarting_s",
    "redone_s",
)


#: Most faults ``--top`` lists (the query's LIMIT).
MAX_TOP = 100_000


def configure(parser: argparse.ArgumentParser) -> None:
    """goodput flags."""
    parser.add_argument(
        "--collector",
        default=None,
        help="collector HOST:PORT (default: C4_AGENT_COLLECTOR or 127.0.0.1:7070)",
    )
    parser.add_argument("--job", default="", help="one job only")
    parser.add_argument("--top", type=int, default=10, help="faults listed, by GPU-hours lost (default 10)")
    parser.add_argument(
        "--json", action="store_true", help='one JSON object: {"jobs": [...], "faults": [...]}'
    )


def run(args: argparse.Namespace) -> int:
    """Print the accounts."""
    from c4.goodput import goodput  # lazy: c4 --help loads this module; grpc ~100 ms
    from c4.query import QueryError

    if not 1 <= args.top <= MAX_TOP:
        print(f"c4 goodput: --top must be 1..{MAX_TOP}, got {args.top}", file=sys.stderr)
        return 2
    address = args.collector or os.environ.get("C4_AGENT_COLLECTOR") or "127.0.0.1:7070"
    try:
        jobs, faults = goodput(address, args.job, args.top)
    except QueryError as exc:
        print(f"c4 goodput: {exc}", file=sys.stderr)
        return 1
    job_rows, fault_rows = printable_times(jobs).to_pylist(), printable_times(faults).to_pylist()
    if args.json:
        print(json.dumps({"jobs": job_rows, "faults": fault_rows}, default=str))
        return 0
    if not job_rows:
        if args.job:
            print(
                f"no account for job {args.job!r} (job names are as its agents report them; `c4 goodput` lists all)"
            )
        else:
            print("no job accounts yet (the collector writes them with its diagnosis passes)")
        return 0
    print(format_table(job_rows, JOB_COLUMNS))
    unknown = [r["job"] for r in job_rows if r.get("redone_unknown")]
    if unknown:
        print(f"redone work after a restart not measured (no checkpoint known) for: {', '.join(unknown)}")
    print()
    print(format_table(fault_rows, FAULT_COLUMNS) if fault_rows else "no fault cost anything")
    return 0
