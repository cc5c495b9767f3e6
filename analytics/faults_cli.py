"""``c4 faults``: list the faults C4D raised, acknowledge or resolve one, on a running collector."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from c4.report import format_table, printable_times

HELP = "List current faults (open/acknowledged), or acknowledge/resolve one, on a running collector."


def configure(parser: argparse.ArgumentParser) -> None:
    """faults flags."""
    parser.add_argument(
        "--collector",
        default=None,
        help="collector HOST:PORT (default: C4_AGENT_COLLECTOR or 127.0.0.1:7070)",
    )
    sub = parser.add_subparsers(dest="faults_command", metavar="ACTION")
    ls = sub.add_parser("list", help="current faults, newest first")
    ls.add_argument("--all", action="store_true", help="include resolved faults")
    ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    for name, verb in (
        ("ack", "acknowledge (stays open; alerts stop repeating)"),
        ("resolve", "resolve now"),
    ):
        p = sub.add_parser(name, help=f"{verb} a fault by its id (see `c4 faults list`)")
        p.add_argument("fault_id", help="e.g. nic_rate:host3/mlx5_2p1")
        p.add_argument("--note", default="", help="why (kept in the actions table)")
        p.add_argument("--by", default=None, help="who (default: the current user)")


def run(args: argparse.Namespace) -> int:
    """List, acknowledge or resolve."""
    from c4.faults import current_faults, update_fault  # lazy: c4 --help loads this module; grpc ~100 ms
    from c4.query import QueryError  # lazy: c4 --help loads this module; grpc ~100 ms

    address = args.collector or os.environ.get("C4_AGENT_COLLECTOR") or "127.0.0.1:7070"
    command = args.faults_command or "list"
    try:
        if command == "list":
            table = printable_times(current_faults(address, include_resolved=getattr(args, "all", False)))
            if getattr(args, "json", False):
                for row in table.to_pylist():
                    print(json.dumps(row, default=str))
            elif table.num_rows == 0:
                print("no current faults")
            else:
                print(format_table(table.to_pylist()))
            return 0
        state = "acknowledged" if command == "ack" else "resolved"
        prev, new = update_fault(address, args.fault_id, state, args.note, args.by or getpass.getuser())
        print(f"{args.fault_id}: {prev or '?'} -> {new}")
        return 0
    except QueryError as exc:
        print(f"c4 faults: {exc}", file=sys.stderr)
        return 1
