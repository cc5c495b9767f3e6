"""``c4 bench agent``: CPU per sampling tick of the full agent on an 8-GPU fake NVML and an 8-NIC sysfs tree."""

from __future__ import annotations

import argparse

HELP = "Agent overhead: CPU per tick of every sampler (8-GPU fake NVML, 8-NIC tree) plus batching; a real agent process's CPU share and RSS."


def configure(parser: argparse.ArgumentParser) -> None:
    """Benchmark size."""
    parser.add_argument("--ticks", type=int, default=300, help="ticks to measure (default 300)")
    parser.add_argument(
        "--process-s",
        type=float,
        default=20.0,
        help="also run a real agent process (same samplers, 1 Hz) against a real collector for this long and "
        "read its CPU and resident memory from /proc (default 20; 0 skips it)",
    )
    parser.add_argument(
        "--compare-flush-s",
        type=float,
        default=0.0,
        help="then the same agent process with flush_interval_s = this (e.g. 5: five ticks a batch), "
        "reported beside the default's in the same run (default 0: skip)",
    )


class TimedLib:
    """An NVML binding whose calls add up their thread CPU time: what the fake NVML itself costs a tick.

    The fake is a test double; on a node the real library answers. Its share is shown beside the
    agent's so the figure is honest about what a real node would pay."""

    def __init__(self, lib) -> None:
        self._lib = lib
        self.cpu_s = 0.0

    def __getattr__(self, name: str):
        import time

        attr = getattr(self._lib, name)
        if not callable(attr) or isinstance(attr, type):  # constants, error classes
            return attr

        def timed(*args, **kwargs):
            t0 = time.thread_time()
            try:
                return attr(*args, **kwargs)
            finally:
                self.cpu_s += time.thread_time() - t0

        return timed


def build_node(root) -> dict:
    """A node's sources under root: fake NVML scenario, 8-NIC sysfs tree, kernel log, NCCL dirs."""
    import json

    from c4.sim.fake_nvml import FAKE_NVML, eight_gpu_scenario
    from c4.sim.sysfs_tree import eight_nic_node

    (root / "nvml.json").write_text(json.dumps(eight_gpu_scenario()))
    eight_nic_node(root / "sys")
    (root / "kmsg.log").write_text("")
    for d in ("inspector", "nccl-logs", "conn"):
        (root / d).mkdir()
    return {
        "host": {},
        "heartbeat": {},
        "gpu": {"nvml_library": FAKE_NVML, "nvml_library_arg": str(root / "nvml.json")},
        # the tree is written once and read as sysfs is (no check for replaced files), as on a node
        "nic": {"sysfs_root": str(root / "sys"), "tree_in_place": True},
        "xid_kmsg": {"kmsg_path": str(root / "kmsg.log")},
        "nccl_inspector": {"dump_dir": str(root / "inspector")},
        "nccl_debug_log": {"log_dir": str(root / "nccl-logs")},
        "nccl_conn": {"record_dir": str(root / "conn")},
    }


def run(args: argparse.Namespace) -> int:
    """Measure CPU time (process time) of ticks, per sampler and for the whole tick with its flush."""
    import sys
    import tempfile
    import time
    from pathlib import Path

    from tqdm import tqdm

    from c4.agent.labels import context_from
    from c4.agent.runner import Agent, build_samplers
    from c4.config import AgentConfig
    from c4.report import emit

    if args.ticks < 1 or args.process_s < 0 or args.compare_flush_s < 0:
        print(
            "c4 bench agent: --ticks must be >= 1, --process-s and --compare-flush-s >= 0 (0 skips them)",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="c4-bench-agent-") as tmp:
        root = Path(tmp)
        cfg = AgentConfig(
            node="bench-node", spool_dir=root / "spool", samplers=build_node(root), collector="127.0.0.1:1"
        )
        ctx = context_from(cfg, env={})
        agent = Agent(cfg, build_samplers(cfg, ctx), ctx)
        fake = TimedLib(None)
        for s in agent.samplers:
            if s.sampler.name == "gpu":
                fake = s.sampler.nvml._lib = TimedLib(s.sampler.nvml._lib)
        agent.start_samplers()
        for _ in range(3):  # warm up: first reads, previous values for rates
            for s in agent.samplers:
                if s.state == "running":
                    agent.sample_one(s, time.time_ns())
            agent.flush()
        per_sampler = {s.sampler.name: 0.0 for s in agent.samplers}
        flush_s = 0.0
        fake.cpu_s = 0.0
        total0 = time.process_time()
        for _ in tqdm(range(args.ticks), desc="ticks", disable=not sys.stdout.isatty()):
            now_ns = time.time_ns()
            for s in agent.samplers:
                if s.state != "running":
                    continue
                t0 = time.process_time()
                agent.sample_one(s, now_ns)
                per_sampler[s.sampler.name] += time.process_time() - t0
            t0 = time.process_time()
            agent.flush()
            flush_s += time.process_time() - t0
            for seq in agent.spool.pending():  # a collector would ack: keep the spool small
                agent.spool.ack(seq)
        total_s = time.process_time() - total0
        rows_per_tick = sum(s.rows for s in agent.samplers) / (args.ticks + 3)
        states = {s.sampler.name: s.state for s in agent.samplers}
        for s in agent.samplers:
            s.sampler.close()
        process = {}
        if args.process_s > 0:
            from c4.bench.agent_process import measure_agent_process

            (root / "process").mkdir()
            process = measure_agent_process(root / "process", build_node(root / "process"), args.process_s)
            if args.compare_flush_s > 0:
                (root / "process-flush").mkdir()
                other = measure_agent_process(
                    root / "process-flush",
                    build_node(root / "process-flush"),
                    args.process_s,
                    flush_interval_s=args.compare_flush_s,
                )
                process["flush_compare"] = {
                    "flush_interval_s": args.compare_flush_s,
                    **{k: other[k] for k in ("core_share_at_1hz", "rss_mib", "thread_cpu_ms_per_s")},
                    "core_share_ratio": round(other["core_share_at_1hz"] / process["core_share_at_1hz"], 3)
                    if process["core_share_at_1hz"]
                    else None,
                }
    cpu_ms = total_s * 1e3 / args.ticks
    table = [
        {
            "part": name,
            "state": states[name],
            "cpu_ms_per_tick": v * 1e3 / args.ticks,
            "share_of_tick": v / total_s,
        }
        for name, v in per_sampler.items()
    ]
    fake_ms = fake.cpu_s * 1e3 / args.ticks
    table.append(
        {
            "part": "  of gpu: the fake NVML itself (test double)",
            "state": "",
            "cpu_ms_per_tick": fake_ms,
            "share_of_tick": fake.cpu_s / total_s,
        }
    )
    table.append(
        {
            "part": "batching + Arrow IPC + spool",
            "state": "",
            "cpu_ms_per_tick": flush_s * 1e3 / args.ticks,
            "share_of_tick": flush_s / total_s,
        }
    )
    summary = {
        **process,  # core_share_at_1hz and rss_mib: what the real agent process costs a node
        "inprocess_cpu_ms_per_tick": round(cpu_ms, 3),
        "inprocess_core_share_at_1hz": round(cpu_ms / 1000, 5),
        # the fake NVML's own CPU, in both figures above (the process runs it too): not a real node's cost
        "fake_nvml_cpu_ms_per_tick": round(fake_ms, 3),
        "rows_per_tick": round(rows_per_tick, 1),
        "ticks": args.ticks,
        "gpus": 8,
        "nics": 8,
    }
    emit(
        f"c4 bench agent: {args.ticks} ticks, 8 GPUs (fake NVML) x 18 NVLinks, 8 x 400G NICs",
        table,
        summary,
        args.json,
    )
    return 0
