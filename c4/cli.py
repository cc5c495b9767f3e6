"""The ``c4`` command: one entry point, subcommands declared as data and imported lazily."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from c4 import __version__
from c4.cli_numbers import guard_numbers

# c4 sim, the demo and the benchmarks start their children with a preexec_fn (die_with_parent), so Python
# forks rather than vforks, and gRPC's fork handlers then ran in the child while the parent's gRPC threads
# were busy: a collector started that way died with SIGABRT before serving ("Epoll1Poller encountered
# epoll_wait error: Bad file descriptor"). No c4 process uses gRPC across a fork (every child execs; the
# process pools spawn), so fork support is off unless the user sets it. gRPC reads this when it starts:
# it is set before any subcommand's module imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

#: subcommand -> module. Each module has ``HELP`` (one line), ``configure(parser)``
#: and ``run(args) -> int``; heavy imports stay inside ``run``.
COMMANDS: dict[str, str] = {
    "agent": "c4.agent.cli",
    "collector": "c4.collector.cli",
    "sql": "c4.collector.sql_cli",
    "demo": "c4.sim.demo",
    "plan": "c4.traffic.cli",
    "sim": "c4.sim.cli",
    "diagnose": "c4.analytics.cli",
    "faults": "c4.analytics.faults_cli",
    "goodput": "c4.analytics.goodput_cli",
    "ui": "c4.ui.cli",
    "catalogue": "c4.catalogue.cli",
    "bench": "c4.bench.cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every subcommand (imports each one's light cli module), or ``only`` that one."""
    parser = argparse.ArgumentParser(
        prog="c4",
        description="C4: communication-driven observability, fault diagnosis and traffic planning "
        "for GPU training clusters.",
    )
    parser.add_argument("--version", action="version", version=f"c4 {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # subcommand not built yet
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(p)
        guard_numbers(p)  # a finite number of at least 0 in every numeric flag
        p.set_defaults(_run=module.run)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names, when it names a known one: then only its cli module is imported.

    A long-running ``c4 agent`` must not carry what other subcommands' modules import (pyarrow through
    ``c4 sql``'s, tens of MiB resident)."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)  # its value
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``c4`` console script."""
    from c4.logs import setup_logging

    parser = build_parser(_command_of(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a refused flag returns its code (2) like any refusal; --help still exits
        if exc.code in (0, None):
            raise
        return int(exc.code) if isinstance(exc.code, int) else 2
    setup_logging(args.log_level)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # an error no subcommand foresaw: one line, the traceback only in DEBUG
        import logging

        logging.getLogger("c4").debug("%s failed", args.command, exc_info=True)
        print(
            f"c4 {args.command}: {type(exc).__name__}: {exc} (--log-level DEBUG shows where)", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
