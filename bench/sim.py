"""``c4 bench sim``: how much faster than real time the digital twin runs (node files written, no agents)."""

from __future__ import annotations

import argparse

HELP = "Digital twin speed: simulated seconds per wall second for 16, 64 and 256 nodes (unthrottled)."


def configure(parser: argparse.ArgumentParser) -> None:
    """Sizes."""
    parser.add_argument("--nodes", default="16,64,256", help="comma-separated cluster sizes")
    parser.add_argument("--steps", type=int, default=10, help="iterations per size")


def run(args: argparse.Namespace) -> int:
    """Run each size unthrottled and report the speed-up over real time."""
    import shutil
    import sys
    import tempfile
    import time
    from pathlib import Path

    from tqdm import tqdm

    from c4.report import emit
    from c4.sim.runner import SimRunner
    from c4.sim.twin import ClusterTwin, Fault

    rows, speedup = [], {}
    for n in tqdm([int(x) for x in args.nodes.split(",")], desc="sizes", disable=not sys.stdout.isatty()):
        work = Path(tempfile.mkdtemp(prefix="c4-bench-sim-"))
        try:
            twin = ClusterTwin(
                nodes=n,
                leaves=max(2, n // 4),
                spines=max(2, min(16, n // 4)),
                seed=1,
                faults=[Fault("nic_degraded", at_s=3, node="host1", nic=2)],
            )
            t0 = time.perf_counter()
            runner = SimRunner(work, twin, "bench")
            setup_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(args.steps):
                runner.step()
            wall = time.perf_counter() - t0
        finally:
            shutil.rmtree(work, ignore_errors=True)
        speedup[str(n)] = round(twin.t / wall, 2)
        rows.append(
            {
                "nodes": n,
                "gpus": n * twin.gpus,
                "simulated_s": twin.t,
                "wall_s": wall,
                "sim_s_per_wall_s": twin.t / wall,
                "setup_s": setup_s,
            }
        )
    emit(
        f"c4 bench sim: {args.steps} iterations per size, node files written, unthrottled",
        rows,
        {"speedup": speedup},
        args.json,
    )
    return 0
