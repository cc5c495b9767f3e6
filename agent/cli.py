"""``c4 agent``: run the node agent, or sample once and print with ``--test``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: How often the main thread of a running agent looks whether its sender stopped for good (then it exits 1).
FATAL_CHECK_EVERY_S = 5.0

HELP = "Run the node agent (samplers -> spool -> collector), or --test to sample once and print."

#: convenience flags -> (sampler, option); giving one also enables that sampler.
ROOT_FLAGS = {
    "proc_root": ("host", "proc_root"),
    "sysfs_root": ("nic", "sysfs_root"),
    "kmsg_path": ("xid_kmsg", "kmsg_path"),
    "nccl_log": ("nccl_debug_log", "log_file"),
    "nccl_ras": ("nccl_ras", "path"),
    "nccl_inspector": ("nccl_inspector", "dump_dir"),
    "step_trace": ("step_trace", "trace_dir"),
    "lldp_json": ("lldp", "path"),
    "lldp_pcap": ("lldp", "pcap"),
    "ibnetdiscover": ("ibnetdiscover", "path"),
    "nvml_library": ("gpu", "nvml_library"),
    "nvml_library_arg": ("gpu", "nvml_library_arg"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Agent flags; each overrides the [agent] section of the config file."""
    parser.add_argument(
        "action",
        nargs="?",
        choices=["run", "build-plugin"],
        default="run",
        help="run (default): the agent; build-plugin: compile the C4 NCCL profiler plugin into --out",
    )
    parser.add_argument("--out", default=".", help="build-plugin: directory for libnccl-profiler-c4.so")
    parser.add_argument("--config", help="TOML config file ([agent] section); C4_AGENT_* env vars apply")
    parser.add_argument("--collector", help="collector HOST:PORT (default 127.0.0.1:7070)")
    parser.add_argument("--node", help="node name (default: host name)")
    parser.add_argument("--agent-id", help="stable agent id (default: node name)")
    parser.add_argument("--job", help="training job id attached to every row")
    parser.add_argument("--spool-dir", help="on-disk spool directory (default /var/lib/c4/spool)")
    parser.add_argument("--interval-s", type=float, help="default sampling interval in seconds")
    parser.add_argument("--samplers", help="comma-separated samplers to run (default: from config)")
    parser.add_argument("--proc-root", help="root of /proc for the host sampler")
    parser.add_argument(
        "--sysfs-root", help="root of /sys for the NIC sampler (a dir holding class/ or sys/class/)"
    )
    parser.add_argument("--kmsg-path", help="kernel log for Xid lines (default /dev/kmsg; a file works)")
    parser.add_argument(
        "--nccl-log", help="one NCCL_DEBUG=INFO log file for the nccl_debug_log sampler (any launcher prefix)"
    )
    parser.add_argument(
        "--nccl-ras",
        metavar="FILE",
        help="a NCCL RAS report (ncclras [-v] [-f json] output) to read instead of the service",
    )
    parser.add_argument(
        "--nccl-inspector",
        metavar="DIR|FILE",
        help="NCCL Inspector dump directory (NCCL_INSPECTOR_DUMP_DIR) or one dump file",
    )
    parser.add_argument(
        "--step-trace",
        metavar="DIR",
        help="directory of training-step traces (*.jsonl, *.parquet; docs/step-trace.md) for the step_trace sampler",
    )
    parser.add_argument(
        "--lldp-json",
        metavar="FILE",
        help="a saved `lldpcli -f json show neighbors details` for the lldp sampler (instead of asking lldpd)",
    )
    parser.add_argument(
        "--lldp-pcap", metavar="FILE", help="LLDP frames from a pcap file for the lldp sampler"
    )
    parser.add_argument(
        "--ibnetdiscover",
        metavar="FILE",
        help="a saved ibnetdiscover topology file for the ibnetdiscover sampler",
    )
    parser.add_argument(
        "--nvml-library",
        help="MODULE:FACTORY of a stand-in with pynvml's call surface for the GPU sampler (default: pynvml)",
    )
    parser.add_argument("--nvml-library-arg", help="argument the --nvml-library factory is called with")
    parser.add_argument("--tls-ca", help="PEM CA bundle that signed the collector's certificate")
    parser.add_argument("--tls-cert", help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--token-file", help="file holding this agent's bearer token")
    parser.add_argument(
        "--insecure", action="store_true", default=None, help="plaintext to a non-loopback collector"
    )
    parser.add_argument("--test", action="store_true", help="sample every source once, print the rows, exit")


def agent_config(args: argparse.Namespace):
    """Config file + env + flags -> validated AgentConfig; exits 2 with the problem named."""
    from c4.client_config import AgentConfig, ConfigError, load_agent_config

    try:
        cfg = load_agent_config(args.config)
        data = cfg.model_dump()
        for flag in (
            "collector",
            "node",
            "agent_id",
            "job",
            "spool_dir",
            "interval_s",
            "tls_ca",
            "tls_cert",
            "tls_key",
            "token_file",
            "insecure",
        ):
            if getattr(args, flag) is not None:
                data[flag] = getattr(args, flag)
        samplers = {k: dict(v) for k, v in data["samplers"].items()}
        if args.samplers:
            wanted = [s.strip() for s in args.samplers.split(",") if s.strip()]
            samplers = {name: samplers.get(name, {}) for name in wanted}
        for flag, (sampler, option) in ROOT_FLAGS.items():
            value = getattr(args, flag)
            if value is not None:
                samplers.setdefault(sampler, {})[option] = value
        if args.test and args.kmsg_path and Path(args.kmsg_path).is_file():
            # --test samples once: a saved log given on the command line is read from its start
            samplers["xid_kmsg"].setdefault("from_start", True)
        if args.test and args.step_trace:
            samplers["step_trace"].setdefault("settle_s", 0.0)  # read every Parquet file there now
        data["samplers"] = samplers
        return AgentConfig.model_validate(data)
    except (ConfigError, ValueError) as exc:
        print(f"c4 agent: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


#: gRPC core settings of the agent process (set before grpc is imported, unless the environment has its own):
#: the legacy client I/O polls its sockets on the thread that waits for the call's events (the sender's)
#: instead of waking EventEngine's thread pool for every read and write: 1.6 -> 0.3 ms of CPU a second in
#: gRPC's own threads for one bundle a second on this host (c4 bench agent), the same bytes on the wire.
GRPC_ENV = {"GRPC_EXPERIMENTS": "-event_engine_client"}


def run(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM, or sample once with --test."""
    import os
    import signal
    import threading

    for key, value in GRPC_ENV.items():
        os.environ.setdefault(key, value)

    from c4.agent.client import quiet_grpc_waits
    from c4.agent.labels import context_from
    from c4.agent.registry import SamplerConfigError
    from c4.agent.runner import Agent, AgentStartError, build_samplers

    if args.action == "build-plugin":
        from c4.agent.plugin_build import BuildError, build_plugin

        try:
            path = build_plugin(args.out)
        except BuildError as exc:
            print(f"c4 agent build-plugin: {exc}", file=sys.stderr)
            return 1
        print(
            f"built {path}\nenable it in a training job with: NCCL_PROFILER_PLUGIN={path.resolve()} "
            "C4_NCCL_PROFILER_DIR=/var/lib/c4/nccl-conn"
        )
        return 0
    cfg = agent_config(args)
    ctx = context_from(cfg)
    try:
        samplers = build_samplers(cfg, ctx)
    except (SamplerConfigError, ValueError) as exc:
        print(f"c4 agent: {exc}", file=sys.stderr)
        return 2
    if args.test:
        from c4.agent.testprint import print_test_sample

        return print_test_sample(cfg, ctx, samplers)
    from c4.security import ClientSecurity, SecurityError

    security = ClientSecurity.from_config(cfg)
    try:
        security.check()
    except SecurityError as exc:
        print(f"c4 agent: {exc}", file=sys.stderr)
        return 2
    from c4.agent.spool import SpoolError
    from c4.shard import parse_collectors

    try:
        agent = Agent(cfg, samplers, ctx)
    except SpoolError as exc:  # an unusable spool_dir: one line naming it, no traceback
        print(f"c4 agent: {exc}", file=sys.stderr)
        return 2
    for address in parse_collectors(cfg.collector):
        security.warn_if_plaintext(address, "agent")
    quiet_grpc_waits()  # the sender's reply waits need not wake 10 times a second
    try:
        agent.start()
    except AgentStartError as exc:
        print(f"c4 agent: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from c4.agent.memory import TRIM_AFTER_S, trim_heap

    if not stop.wait(TRIM_AFTER_S):
        trim_heap()
    # the main thread only waits: for a signal, and now and then to see whether sending ended for good
    # (every wake-up of a thread costs an idle agent CPU; exiting a few seconds later costs nothing)
    while not stop.wait(FATAL_CHECK_EVERY_S):
        if agent.sender.fatal:  # sending cannot go on: say so and exit non-zero, not loop forever
            print(f"c4 agent: {agent.sender.fatal}", file=sys.stderr)
            agent.stop(drain_timeout_s=0)
            return 1
    agent.stop(drain_timeout_s=cfg.drain_timeout_s)
    return 0
