"""Every production sampler streams into a real collector end to end (fake NVML, fixture sysfs, NCCL files)."""

import json
import shutil
import time
from pathlib import Path

from testkit.procs import AgentProc, CollectorProc

from c4.bench.agent import build_node
from c4.query import query_arrow
from c4.sim.sysfs_tree import eight_nic_node
from c4.step_trace import StepTraceWriter

DATA = Path(__file__).resolve().parents[1] / "data" / "nccl"


def test_all_samplers_end_to_end(tmp_path, sysfs_fixture):
    node = tmp_path / "node"
    node.mkdir()
    samplers = build_node(node)
    samplers["nic"] = {"sysfs_root": str(sysfs_fixture)}  # the real captured tree
    eight_nic_node(node / "unused-sys")
    scenario = json.loads((node / "nvml.json").read_text())
    scenario["events"] = [{"at_s": 0, "gpu": 5, "xid": 48}]
    (node / "nvml.json").write_text(json.dumps(scenario))
    shutil.copy(DATA / "inspector-rank2.log", node / "inspector" / "rank2.log")
    shutil.copy(DATA / "nccl-debug-rank3.log", node / "nccl-logs" / "rank3.log")
    (node / "kmsg.log").write_text("NVRM: Xid (PCI:0000:2a:00): 79, pid=1, GPU has fallen off the bus.\n")
    samplers["xid_kmsg"]["from_start"] = True
    with StepTraceWriter(node / "step-trace", "llm-1", rank=3, dp_rank=1, pp_stage=0, tp_rank=1) as w:
        for step in range(3):
            w.op(step, "forward", time.time() - 10 + step, 0.1, microbatch=0)
            w.op(step, "all_reduce", time.time() - 9.8 + step, 0.05, comm="dp")
    samplers["step_trace"] = {"trace_dir": str(node / "step-trace")}
    cfg = tmp_path / "agent.toml"
    lines = ["[agent]", "flush_interval_s = 0.2", "interval_s = 0.5"]
    for name, opts in samplers.items():
        lines.append(f"[agent.samplers.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in opts.items()]
    cfg.write_text("\n".join(lines) + "\n")
    col = CollectorProc(tmp_path).start()
    agent = AgentProc(tmp_path, col.address, "gpu-node-7", ["--config", str(cfg), "--job", "llm-1"]).start()
    expect = {
        "gpu_samples": "SELECT count(DISTINCT gpu_index) FROM gpu_samples WHERE util_gpu_pct > 0",
        "nvlink_samples": "SELECT count(DISTINCT (gpu_index, link)) FROM nvlink_samples",
        "gpu_events_nvml": "SELECT count(*) FROM gpu_events WHERE source = 'nvml' AND xid = 48 AND gpu_index = 5",
        "gpu_events_kmsg": "SELECT count(*) FROM gpu_events WHERE source = 'kmsg' AND xid = 79",
        "ib_port_samples": "SELECT count(DISTINCT device || port) FROM ib_port_samples",
        "netdev_samples": "SELECT count(DISTINCT netdev) FROM netdev_samples",
        "nccl_collectives": "SELECT count(*) FROM nccl_collectives WHERE rank = 2",
        "nccl_topology": "SELECT count(*) FROM nccl_topology WHERE kind = 'conn'",
        "nodes": "SELECT max(gpu_count) FROM nodes WHERE node = 'gpu-node-7'",
        "step_ops": "SELECT count(*) FROM step_ops WHERE job = 'llm-1' AND rank = 3 AND node = 'gpu-node-7'",
        "sampler_health": "SELECT count(DISTINCT sampler) FROM agent_sampler_health WHERE state = 'running'",
    }
    want = {
        "gpu_samples": 8,
        "nvlink_samples": 144,
        "gpu_events_nvml": 1,
        "gpu_events_kmsg": 1,
        "ib_port_samples": 4,
        "netdev_samples": 2,
        "nccl_collectives": 3,
        "nccl_topology": 5,
        "nodes": 8,
        "step_ops": 6,
        "sampler_health": 9,
    }
    got = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = {k: query_arrow(col.address, q)[0].column(0)[0].as_py() for k, q in expect.items()}
            if all((got[k] or 0) >= v for k, v in want.items()):
                break
            time.sleep(0.5)
    finally:
        agent.stop()
        col.stop()
    assert all((got[k] or 0) >= v for k, v in want.items()), got
    assert got["gpu_events_nvml"] == 1 and got["gpu_events_kmsg"] == 1  # each event exactly once
