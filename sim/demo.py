"""``c4 demo``: a collector and agents on this machine, streaming real samples you can query with SQL."""

from __future__ import annotations

import argparse

from c4.self_command import C4_COMMAND

HELP = "Start a collector and agents on loopback and show their rows arriving (Ctrl-C to stop)."

SUMMARY_SQL = (
    "SELECT 'gpu_samples' AS tbl, count(*) AS rows, max(ts) AS latest FROM gpu_samples "
    "UNION ALL SELECT 'nvlink_samples', count(*), max(ts) FROM nvlink_samples "
    "UNION ALL SELECT 'ib_port_samples', count(*), max(ts) FROM ib_port_samples "
    "UNION ALL SELECT 'host_cpu', count(*), max(ts) FROM host_cpu "
    "UNION ALL SELECT 'host_memory', count(*), max(ts) FROM host_memory "
    "UNION ALL SELECT 'agent_heartbeat', count(*), max(ts) FROM agent_heartbeat "
    "UNION ALL SELECT 'agent_health', count(*), max(ts) FROM agent_health "
    "UNION ALL SELECT 'nccl_collectives', count(*), max(ts) FROM nccl_collectives "
    "UNION ALL SELECT 'nccl_connections', count(*), max(ts) FROM nccl_connections "
    "UNION ALL SELECT 'gpu_events', count(*), max(ts) FROM gpu_events ORDER BY 1"
)


#: The demo collector's remediation: drain and requeue commands recorded as dry runs (nothing runs), so
#: a fault's recovery timeline shows what C4 would have done; /metrics on a free port.
DEMO_COLLECTOR_TOML = """[collector]
isolation_command = "scontrol update NodeName={{node}} State=DRAIN Reason={{reason}}"
restart = "slurm"
metrics_listen = "127.0.0.1:{metrics_port}"
"""

#: The recovery timelines of the newest faults, one line each (the fault_timeline view).
TIMELINES_SQL = (
    "SELECT fault_id, string_agg(stage || ' +' || round(since_onset_s, 1) || 's', ' -> ' ORDER BY ts, stage) "
    "AS recovery_timeline FROM fault_timeline GROUP BY fault_id ORDER BY max(ts) DESC LIMIT 5"
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
    parser.add_argument(
        "--nodes", type=int, default=16, help="simulated GPU nodes (8 GPUs, 8 x 400G NICs each)"
    )
    parser.add_argument("--no-ui", action="store_true", help="do not start the dashboard (c4 ui)")
    parser.add_argument(
        "--ui-port", type=int, default=8501, help="dashboard HTTP port (default 8501; a free one if taken)"
    )


def store_plan(address: str, twin) -> dict:
    """Plan the twin's connections with C4P and store the plan, its link loads and its plan_runs row (the
    dashboard's Traffic page); returns the row. ECMP is the hashing the twin's switches do (its seed): the
    routing the twin runs, so the page's ECMP loads are the ones behind the twin's telemetry."""
    import uuid

    from c4.push import push_table
    from c4.traffic.export import link_table, plan_run_row, plan_run_table, plan_table
    from c4.traffic.planner import Planner

    plan = Planner(twin.topo, max_qps=4).plan(twin.flows)
    plan_id = f"plan-{uuid.uuid4().hex[:8]}"
    job = twin.job_name(twin.hosts[0])
    run = plan_run_row(plan, plan_id, job, "initial", ecmp_seeds=1, first_seed=twin.seed)
    links = link_table(plan, plan_id, ecmp_seeds=1, first_seed=twin.seed)
    over = run["max_load_over_bound"] or 0.0
    push_table(address, "plans", plan_table(plan, plan_id, over), agent_id="c4-demo-plan")
    push_table(address, "plan_links", links, agent_id="c4-demo-plan")
    push_table(address, "plan_runs", plan_run_table(run), agent_id="c4-demo-plan")
    return run


def start_ui(address: str, port: int, log_path):
    """`c4 ui` in a child process on ``port`` (or a free port if it is taken); returns (process, url)."""
    import socket
    import subprocess

    from c4.sim.procs import die_with_parent, free_port

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            port = free_port()
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [*C4_COMMAND, "ui", "--collector", address, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent(),  # noqa: PLW1509 - a killed demo leaves no dashboard
    )
    return proc, f"http://127.0.0.1:{port}/"


def demo_twin(nodes: int, loops: int = 20):
    """The demo cluster: deploy/examples/scenarios/demo.yaml's faults, repeated every 10 minutes."""
    from pathlib import Path

    from c4.sim.twin import ClusterTwin, Fault, load_scenario

    scenario = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "scenarios" / "demo.yaml"
    if scenario.is_file():
        spec = load_scenario(scenario)
    else:  # an installed package without the repository's deploy/ folder
        spec = {"cluster": {}, "faults": [Fault("nic_degraded", at_s=60, duration_s=90, node="host3", nic=2)]}
    cluster = {**(spec.get("cluster") or {}), "nodes": nodes}
    if nodes % int(cluster.get("pp", 1)):
        cluster["pp"] = 1  # pipeline stages must split the nodes evenly
    faults = []
    for k in range(loops):
        for f in spec["faults"]:
            if f.node and int(f.node[4:]) >= nodes:
                continue
            faults.append(Fault(**{**f.__dict__, "at_s": f.at_s + 600 * k}))
    return ClusterTwin(**cluster, faults=faults)


def run(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C or the duration passes."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import polars as pl

    from c4.faults import CURRENT_FAULTS_SQL
    from c4.query import QueryError, query_arrow
    from c4.report import printable_times
    from c4.sim.procs import die_with_parent, start_collector

    # what C4D currently reports, for the periodic summary
    open_faults_sql = (
        "SELECT fault_class, component, action, round(confidence, 2) AS confidence, summary "
        f"FROM ({CURRENT_FAULTS_SQL}) WHERE state <> 'resolved' ORDER BY last_seen DESC LIMIT 10"
    )

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"c4 demo: starting a collector on {args.listen} (store: {work / 'collector' / 'c4.duckdb'})",
        flush=True,
    )
    from c4.sim.procs import free_port

    (work / "collector").mkdir(parents=True, exist_ok=True)
    metrics_port = free_port()
    collector_cfg = work / "collector" / "c4.toml"
    collector_cfg.write_text(DEMO_COLLECTOR_TOML.format(metrics_port=metrics_port))
    try:
        collector = start_collector(
            work / "collector", listen=args.listen, extra=["--config", str(collector_cfg)]
        )
    except (OSError, ChildProcessError, TimeoutError) as exc:  # its rows would go to whoever serves there
        print(f"c4 demo: {exc} (stop what serves there, or give --listen another address)", file=sys.stderr)
        return 1
    print(
        f"c4 demo: Prometheus metrics at http://127.0.0.1:{metrics_port}/metrics "
        "(c4_fault_time_to_detect_seconds, ..._to_isolate_, ..._to_recover_); isolation and job restart "
        f"are dry runs ({collector_cfg})",
        flush=True,
    )
    env = {**os.environ, "C4_AGENT_HEALTH_INTERVAL_S": "5"}
    agent_log = open(work / "agent.log", "ab")  # noqa: SIM115 - owned by the child
    agent = subprocess.Popen(
        [
            *C4_COMMAND,
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
        preexec_fn=die_with_parent(),  # noqa: PLW1509 - a killed demo leaves no agent
    )
    print(f"c4 demo: agent running on this host (log: {work / 'agent.log'})", flush=True)
    import shutil
    import threading

    from c4.sim.runner import SimRunner

    shutil.rmtree(work / "sim" / "nodes", ignore_errors=True)
    (work / "sim").mkdir(parents=True, exist_ok=True)
    twin = demo_twin(args.nodes)
    runner = SimRunner(work / "sim", twin, "demo")
    runner.write_ground_truth(collector.address)
    runner.start_agents(collector.address, env=env)
    sim_stop = threading.Event()
    sim_thread = threading.Thread(target=runner.run, args=(1e9, 1.0, sim_stop.is_set), daemon=True)
    sim_thread.start()
    print(
        f"c4 demo: simulated cluster of {args.nodes} nodes x 8 GPUs x 8 NICs on a leaf/spine fabric, one real "
        f"agent per node (files under {work / 'sim' / 'nodes'}); scripted faults from "
        "deploy/examples/scenarios/demo.yaml repeat every 10 minutes (table sim_ground_truth)",
        flush=True,
    )
    try:
        run = store_plan(collector.address, twin)
        print(
            f"c4 demo: C4P plan {run['plan_id']} for job {run['job']} stored (tables plans, plan_links, plan_runs): "
            f"max link load / bound {run['max_load_over_bound']:.2f} under the plan, "
            f"{run['ecmp_over_bound']:.2f} under the ECMP hashing the twin runs (dashboard: Traffic)",
            flush=True,
        )
    except Exception as exc:  # the demo runs on without a plan
        print(f"c4 demo: could not store a traffic plan: {exc}", flush=True)
    ui = None
    if not args.no_ui:
        ui, url = start_ui(collector.address, args.ui_port, work / "ui.log")
        print(
            f"c4 demo: dashboard at {url} (log: {work / 'ui.log'}); faults appear on its Faults page",
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
                    faults, _ = query_arrow(collector.address, open_faults_sql)
                    timelines, _ = query_arrow(collector.address, TIMELINES_SQL)
                    with pl.Config(
                        tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, fmt_str_lengths=90
                    ):
                        print(pl.from_arrow(printable_times(table)), flush=True)
                        if faults.num_rows:
                            print(f"c4 demo: {faults.num_rows} open faults (c4 faults list):", flush=True)
                            print(pl.from_arrow(printable_times(faults)), flush=True)
                        if timelines.num_rows:
                            print(
                                "c4 demo: recovery timelines (view fault_timeline; no alert sink configured):"
                            )
                            for r in timelines.to_pylist():
                                print(f"  {r['fault_id']}: {r['recovery_timeline']}", flush=True)
                except QueryError as exc:
                    print(f"c4 demo: query failed: {exc}", flush=True)
                next_print = time.monotonic() + args.every_s
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        sim_stop.set()
        if ui is not None:
            ui.terminate()
            try:
                ui.wait(15)
            except subprocess.TimeoutExpired:
                ui.kill()
        runner.stop_agents()
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
        collector.stop()
        print(
            f"c4 demo: stopped; the store stays at {collector.db} (open it with the duckdb CLI)", flush=True
        )
    return 0
