"""``c4 demo``: a collector and agents on this machine, streaming real samples you can query with SQL."""

from __future__ import annotations

import argparse

HELP = "Start a collector and agents on loopback and show their rows arriving (Ctrl-C to stop)."

SUMMARY_SQL = (
    "SELECT 'gpu_samples' AS tbl, count(*) AS rows, max(ts) AS latest FROM gpu_samples "
    "UNION ALL SELECT 'nvlink_samples', count(*), max(ts) FROM nvlink_samples "
    "UNION ALL SELECT 'ib_port_samples', count(*), max(ts) FROM ib_port_samples "
    "UNION ALL SELECT 'host_cpu', count(*), max(ts) FROM host_cpu "
    "UNION ALL SELECT 'host_memory', count(*), max(ts) FROM host_memory "
    "UNION ALL SELECT 'agent_heartbeat', count(*), max(ts) FROM agent_heartbeat "
    "UNION ALL SELECT 'agent_health', count(*), max(ts) FROM agent_health ORDER BY 1"
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Demo flags."""
    parser.add_argument("--workdir", default="var/demo", help="where the DuckDB file, spools and logs go")
    parser.add_argument(
        "--listen", default="127.0.0.1:7070", help="collector address (default 127.0.0.1:7070)"
    )
    parser.add_argument(
        "--duration-s", type=float, default=0.0, help="stop after this many seconds (0: run until Ctrl-C)"
    )
    parser.add_argument("--every-s", type=float, default=10.0, help="print the summary this often")


def start_simulated_node(work, address: str, env: dict):
    """An agent whose GPU and NIC sources are the fake NVML and a synthetic sysfs tree (same samplers as production)."""
    import json
    import shutil
    import subprocess
    import sys

    from c4.agent.bench import build_node

    node = work / "sim-gpu-0"
    shutil.rmtree(node, ignore_errors=True)
    node.mkdir(parents=True)
    samplers = build_node(node)
    lines = ["[agent]", 'node = "sim-gpu-0"', 'job = "demo"']
    for name, opts in samplers.items():
        if name == "host":
            continue
        lines.append(f"[agent.samplers.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in opts.items()]
    (node / "agent.toml").write_text("\n".join(lines) + "\n")
    log = open(work / "sim-gpu-0.log", "ab")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "c4.cli",
            "agent",
            "--config",
            str(node / "agent.toml"),
            "--collector",
            address,
            "--spool-dir",
            str(node / "spool"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C or the duration passes."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import polars as pl

    from c4.collector.bench_proc import start_collector
    from c4.query import QueryError, query_arrow

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"c4 demo: starting a collector on {args.listen} (store: {work / 'collector' / 'c4.duckdb'})",
        flush=True,
    )
    collector = start_collector(work / "collector", listen=args.listen)
    env = {**os.environ, "C4_AGENT_HEALTH_INTERVAL_S": "5"}
    agent_log = open(work / "agent.log", "ab")  # noqa: SIM115 - owned by the child
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "c4.cli",
            "agent",
            "--collector",
            collector.address,
            "--spool-dir",
            str(work / "spool"),
            "--samplers",
            "host,heartbeat",
            "--job",
            "demo",
        ],
        stdout=agent_log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    print(f"c4 demo: agent running on this host (log: {work / 'agent.log'})", flush=True)
    sim_agent = start_simulated_node(work, collector.address, env)
    print(
        "c4 demo: agent for simulated node sim-gpu-0 (8 GPUs on the fake NVML, 8 x 400G NICs in a "
        f"synthetic sysfs tree; log: {work / 'sim-gpu-0.log'})",
        flush=True,
    )
    print("c4 demo: try it yourself in another terminal:", flush=True)
    print(
        f"  .venv/bin/c4 sql --collector {collector.address} \"SELECT * FROM host_cpu_rate WHERE cpu = 'all' "
        'ORDER BY ts DESC LIMIT 5"',
        flush=True,
    )
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    started = time.monotonic()
    try:
        next_print = started + min(3.0, args.every_s)
        while not stop["now"]:
            if args.duration_s and time.monotonic() - started >= args.duration_s:
                break
            if time.monotonic() >= next_print:
                try:
                    table, _ = query_arrow(collector.address, SUMMARY_SQL)
                    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
                        print(pl.from_arrow(table), flush=True)
                except QueryError as exc:
                    print(f"c4 demo: query failed: {exc}", flush=True)
                next_print = time.monotonic() + args.every_s
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (agent, sim_agent):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        collector.stop()
        print(
            f"c4 demo: stopped; the store stays at {collector.db} (open it with the duckdb CLI)", flush=True
        )
    return 0
