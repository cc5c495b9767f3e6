"""``c4 bench plugin``: ns per profiler callback, C4 plugin vs. an empty plugin, side by side."""

from __future__ import annotations

import argparse

from c4.cli_numbers import at_least_one

HELP = "Profiler plugin overhead: ns per NCCL profiler callback for the C4 plugin vs. an empty plugin."


def configure(parser: argparse.ArgumentParser) -> None:
    """Benchmark size."""
    parser.add_argument(
        "--ops", type=at_least_one, default=200_000, help="proxy ops per round (44 callbacks each)"
    )
    parser.add_argument("--rounds", type=at_least_one, default=5, help="alternating rounds; medians reported")


def run(args: argparse.Namespace) -> int:
    """Build both plugins and the driver, alternate rounds, print medians."""
    import json
    import os
    import statistics
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from tqdm import tqdm

    from c4.agent.plugin_build import build_driver, build_empty, build_plugin
    from c4.report import emit

    with tempfile.TemporaryDirectory(prefix="c4-bench-plugin-") as tmp:
        out = Path(tmp)
        libs = {"c4": build_plugin(out), "empty": build_empty(out)}
        driver = build_driver(out)
        env = {**os.environ, "C4_NCCL_PROFILER_DIR": str(out / "records")}
        ns: dict[str, list[float]] = {"c4": [], "empty": []}
        with tqdm(total=args.rounds * 2, desc="rounds", disable=not sys.stdout.isatty()) as bar:
            for _ in range(args.rounds):
                for name, lib in libs.items():
                    proc = subprocess.run(
                        [str(driver), "bench", str(lib), "5", str(args.ops)],
                        capture_output=True,
                        text=True,
                        env=env,
                        check=True,
                    )
                    ns[name].append(json.loads(proc.stdout.strip().splitlines()[-1])["ns_per_event"])
                    bar.update()
    c4_ns, empty_ns = statistics.median(ns["c4"]), statistics.median(ns["empty"])
    rows = [
        {"plugin": "C4 (aggregating, background flush)", "ns_per_event": c4_ns, "rounds": ns["c4"]},
        {"plugin": "empty (returns at once)", "ns_per_event": empty_ns, "rounds": ns["empty"]},
    ]
    summary = {
        "ns_per_event": round(c4_ns, 2),
        "ns_per_event_empty": round(empty_ns, 2),
        "ns_added": round(c4_ns - empty_ns, 2),
        "calls_per_round": args.ops * 44,
        "rounds": args.rounds,
    }
    emit(
        f"c4 bench plugin: {args.ops:,} proxy ops x 44 callbacks, median of {args.rounds} alternating rounds",
        rows,
        summary,
        args.json,
    )
    return 0
