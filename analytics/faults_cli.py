"""``c4 faults``: list the faults C4D raised, acknowledge or resolve one, and hold or release remediation,
on a running collector."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from c4.report import format_table, printable_times

HELP = (
    "List current faults (open/acknowledged), acknowledge/resolve one, or hold/release remediation "
    "(isolation and job restart) on a running collector."
)

HOLD_HELP = """\
Hold automatic remediation (the isolation command and the job restart) for one job (--job) or for
every job (--all), now, without editing the config or restarting the collector. While a job is held,
a fault of that job is still diagnosed and alerted; its remediation is recorded in the actions table
with outcome 'held' and runs once, when the hold lifts (if the fault is still open). The hold is
stored by the collector and survives its restarts. Needs a token with the operator role."""

RELEASE_HELP = """\
Release an operator's hold (from `c4 faults hold`) for one job (--job) or the cluster-wide one
(--all; job holds stay). Held remediation of faults still open runs at once, each step once. Holds
from the collector config (remediation_hold, remediation_hold_jobs) cannot be released here: the
reply says so; they lift only with a config change and a collector restart."""


def configure(parser: argparse.ArgumentParser) -> None:
    """faults flags."""
    parser.add_argument(
        "--collector",
        default=None,
        help="collector HOST:PORT (default: C4_AGENT_COLLECTOR or 127.0.0.1:7070)",
    )
    sub = parser.add_subparsers(dest="faults_command", metavar="ACTION")
    # each action takes --collector too (`c4 faults hold --collector X ...`); SUPPRESS keeps the one given first
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--collector", default=argparse.SUPPRESS, help="collector HOST:PORT (as above)")
    ls = sub.add_parser("list", help="current faults, newest first", parents=[where])
    ls.add_argument("--all", action="store_true", help="include resolved faults")
    ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    for name, verb in (
        ("ack", "acknowledge (stays open; alerts stop repeating)"),
        ("resolve", "resolve now"),
    ):
        p = sub.add_parser(name, help=f"{verb} a fault by its id (see `c4 faults list`)", parents=[where])
        p.add_argument("fault_id", help="e.g. nic_rate:host3/mlx5_2p1")
        p.add_argument("--note", default="", help="why (kept in the actions table)")
        p.add_argument("--by", default=None, help="who (default: the current user)")
    for name, text, short in (
        ("hold", HOLD_HELP, "hold remediation (isolation, job restart) for a job or cluster-wide"),
        ("release", RELEASE_HELP, "release an operator's hold on remediation"),
    ):
        verb = name
        p = sub.add_parser(
            name,
            parents=[where],
            help=short,
            description=text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("--job", help=f"{verb} this job (as its agents report it, see `c4 faults list`)")
        which.add_argument("--all", action="store_true", help=f"{verb} cluster-wide (every job)")
        p.add_argument("--note", default="", help="why (kept in the remediation_holds table)")
        p.add_argument("--by", default=None, help="who (default: the current user)")
        p.add_argument("--json", action="store_true", help="the reply as one JSON object")
    holds = sub.add_parser(
        "holds",
        parents=[where],
        help="holds on remediation in force (operators' and the collector config's)",
        description="Every hold on remediation in force: set by operators (c4 faults hold) or by the "
        "collector config (remediation_hold, remediation_hold_jobs; source 'config').",
    )
    holds.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def run(args: argparse.Namespace) -> int:
    """List, acknowledge or resolve."""
    from c4.faults import (  # lazy: c4 --help loads this module; grpc ~100 ms
        current_faults,
        hold_rows,
        list_holds,
        set_hold,
        update_fault,
    )
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
        if command in ("hold", "release"):
            if not args.all and not args.job.strip():
                print(
                    f"c4 faults {command}: --job needs a job name (an empty one is not cluster-wide: "
                    "say --all for that)",
                    file=sys.stderr,
                )
                return 2
            reply = set_hold(
                address,
                None if args.all else args.job,
                command == "hold",
                args.note,
                args.by or getpass.getuser(),
            )
            if args.json:
                print(
                    json.dumps(
                        {
                            "changed": reply.changed,
                            "message": reply.message,
                            "resumed_steps": reply.resumed_steps,
                            "holds": hold_rows(reply),
                        }
                    )
                )
            else:
                print(reply.message)
                print_holds(hold_rows(reply))
            return 0
        if command == "holds":
            rows = hold_rows(list_holds(address))
            if args.json:
                for row in rows:
                    print(json.dumps(row))
            else:
                print_holds(rows)
            return 0
        state = "acknowledged" if command == "ack" else "resolved"
        prev, new = update_fault(address, args.fault_id, state, args.note, args.by or getpass.getuser())
        print(f"{args.fault_id}: {prev or '?'} -> {new}")
        return 0
    except QueryError as exc:
        print(f"c4 faults: {exc}", file=sys.stderr)
        return 1


def print_holds(rows: list[dict]) -> None:
    """The holds in force as a table ('no holds: remediation runs as configured' when none)."""
    if rows:
        print(format_table(rows))
    else:
        print("no holds: remediation runs as configured")
