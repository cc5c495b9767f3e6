"""``c4 sim``: run the digital twin (simulated cluster + fault scenario) with one real agent per node."""

from __future__ import annotations

import argparse
import sys

HELP = "Run the cluster digital twin: simulated nodes and faults from a scenario, one real agent per node."


def configure(parser: argparse.ArgumentParser) -> None:
    """sim flags."""
    parser.add_argument(
        "--scenario", help="scenario YAML (deploy/examples/scenarios/*.yaml); default: no faults"
    )
    parser.add_argument("--nodes", type=int, help="simulated nodes (overrides the scenario)")
    parser.add_argument("--collector", help="collector HOST:PORT the agents stream to (omit: files only)")
    parser.add_argument("--workdir", default="var/sim", help="where the node files go")
    parser.add_argument("--duration-s", type=float, default=120.0, help="simulated seconds to run")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="simulated seconds per wall second (0: unthrottled)"
    )
    parser.add_argument("--seed", type=int, help="random seed (overrides the scenario)")
    parser.add_argument("--agent-interval-s", type=float, default=1.0, help="the agents' sampling interval")


def build_twin(args: argparse.Namespace):
    """The twin from scenario + flags."""
    from pathlib import Path

    from c4.sim.jobs_twin import JobsTwin
    from c4.sim.twin import ClusterTwin, load_scenario

    spec = load_scenario(args.scenario) if args.scenario else {"faults": []}
    cluster = dict(spec.get("cluster") or {})
    if args.nodes:
        cluster["nodes"] = args.nodes
    if args.seed is not None:
        cluster["seed"] = args.seed
    name = spec.get("name") or (Path(args.scenario).stem if args.scenario else "healthy")
    if spec.get("jobs"):  # jobs in real structure (TP x PP x DP), simulated over the run's duration
        horizon = getattr(args, "duration_s", None) or 240.0
        return JobsTwin(**cluster, jobs=spec["jobs"], faults=spec["faults"], horizon_s=horizon), name
    return ClusterTwin(**cluster, faults=spec["faults"]), name


def run(args: argparse.Namespace) -> int:
    """Build, start agents, advance, stop."""
    import shutil
    import signal
    from pathlib import Path

    from c4.sim.runner import SimRunner

    try:
        twin, name = build_twin(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"c4 sim: {exc}", file=sys.stderr)
        return 2
    work = Path(args.workdir)
    shutil.rmtree(work / "nodes", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    runner = SimRunner(work, twin, name)
    runner.write_ground_truth(args.collector)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    if args.collector:
        runner.start_agents(args.collector, args.agent_interval_s)
        up = runner.wait_agents(args.collector)  # simulated time starts once every node is observed
        if up < len(runner.writers):
            print(
                f"c4 sim: only {up} of {len(runner.writers)} agents reported within 60 s; starting anyway",
                flush=True,
            )
    print(
        f"c4 sim: scenario {name}: {twin.nodes} nodes x {twin.gpus} GPUs x {twin.nics} NICs, "
        f"{len(twin.faults)} faults; node files in {work / 'nodes'}",
        flush=True,
    )
    try:
        runner.run(args.duration_s, args.speed, stop=lambda: stop["now"])
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop_agents()
    print(f"c4 sim: {runner.steps} iterations, {twin.t:.1f} simulated s", flush=True)
    return 0
