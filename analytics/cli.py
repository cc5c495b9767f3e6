"""``c4 diagnose``: offline diagnosis; today, hang localization from PyTorch Flight Recorder dumps."""

from __future__ import annotations

import argparse
import sys

HELP = (
    "Diagnose a training job offline: --flight-recorder DIR names the ranks missing from the last collective."
)


def configure(parser: argparse.ArgumentParser) -> None:
    """diagnose flags."""
    parser.add_argument(
        "--flight-recorder",
        metavar="DIR",
        required=True,
        help="directory of Flight Recorder dumps (one per rank, pickle or JSON)",
    )
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")


def run(args: argparse.Namespace) -> int:
    """Print, per process group, the last collective and the ranks that never entered or never finished it."""
    import json
    from pathlib import Path

    from c4.analytics.flight_recorder import find_missing_ranks, load_dir
    from c4.report import format_table

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
        }
        for v in verdicts
    ]
    if args.json:
        print(
            json.dumps(
                [
                    {**r, "missing": v.missing, "stuck_in_it": v.stuck}
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
    return 0
