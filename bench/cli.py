"""``c4 bench NAME``: benchmarks declared as data; each prints a table and, with --json, one JSON line."""

from __future__ import annotations

import argparse
import importlib

HELP = "Run a benchmark (ingest, agent, plan, sim, diagnose, ui, plugin, load, checks, lake, chaos, conformance, downtime, goodput, rollup, commit); side-by-side ratios."

#: benchmark -> module with ``HELP``, ``configure(parser)`` and ``run(args) -> int``.
BENCHES: dict[str, str] = {
    "ingest": "c4.bench.ingest",
    "agent": "c4.bench.agent",
    "plan": "c4.bench.plan",
    "plugin": "c4.bench.plugin",
    "sim": "c4.bench.sim",
    "load": "c4.bench.load",
    "checks": "c4.bench.checks",
    "lake": "c4.bench.lake",
    "chaos": "c4.bench.chaos",
    "diagnose": "c4.bench.diagnose",
    "conformance": "c4.bench.conformance",
    "downtime": "c4.bench.downtime",
    "goodput": "c4.bench.goodput",
    "rollup": "c4.bench.rollup",
    "commit": "c4.bench.commit",
    "ui": "c4.bench.ui",  # named, not imported: nothing imports the ui room
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add one sub-parser per benchmark."""
    sub = parser.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, module_name in BENCHES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
        module.configure(p)
        p.set_defaults(_bench_run=module.run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen benchmark."""
    return int(args._bench_run(args) or 0)
