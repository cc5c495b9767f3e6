"""A cpu_stall in the jobs twin, through the production host, GPU and step-trace samplers, to a finding that
says what the host did (busy or iowait) and how idle the GPU was; a slow worker gets none of that."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from c4.agent.batcher import convert_rows
from c4.agent.labels import context_from
from c4.agent.runner import build_samplers
from c4.analytics.diagnose import diagnose
from c4.catalogue import load
from c4.config import AgentConfig
from c4.sim.jobs_twin import JobsTwin
from c4.sim.runner import SimRunner
from c4.sim.twin import Fault

EPOCH_S = 1_800_000_000.0
#: Two small jobs, one node each: a (tp 2, pp 2, dp 2) on host0, b (the same) on host1.
JOBS = [
    {"name": "a", "tp": 2, "pp": 2, "dp": 2, "microbatches": 4, "first_node": 0},
    {"name": "b", "tp": 2, "pp": 2, "dp": 2, "microbatches": 4, "first_node": 1},
]
SAMPLERS = ("host", "gpu", "step_trace")
TABLES = ("host_cpu", "gpu_samples", "step_ops")


def run(tmp_path: Path, faults: list[Fault], ticks: int) -> tuple[JobsTwin, dict[str, pl.DataFrame]]:
    """Step the twin; each node's host, GPU and step-trace samplers read what it wrote; frames by table."""
    twin = JobsTwin(
        nodes=2, gpus=8, nics=2, leaves=2, spines=2, seed=1, jobs=JOBS, faults=faults, horizon_s=40
    )
    runner = SimRunner(tmp_path, twin, "t", epoch_s=EPOCH_S)
    readers = {}
    for host, w in runner.writers.items():
        cfg = AgentConfig(
            node=host, samplers={k: w.sampler_config()[k] for k in SAMPLERS}, spool_dir=tmp_path / "s"
        )
        readers[host] = build_samplers(cfg, context_from(cfg, env={}))
        for s in readers[host]:
            s.probe()
    cat, parts = load(), {t: [] for t in TABLES}
    for _ in range(ticks):
        runner.step()
        ts = datetime.fromtimestamp(EPOCH_S + twin.t, UTC).replace(tzinfo=None)
        for host, ss in readers.items():
            for s in ss:
                for table, rows in s.sampler.sample(0).items():
                    if table in parts and rows:
                        converted = convert_rows(cat, table, rows, {"node": host, "ts": ts})
                        assert converted.dropped == 0
                        parts[table].append(pl.from_arrow(converted.table))
    return twin, {t: pl.concat(p) for t, p in parts.items()}


@pytest.mark.parametrize("state", ["busy", "iowait"])
def test_a_cpu_stall_says_what_its_host_did_and_a_slow_worker_gets_none_of_it(tmp_path, state):
    stall = Fault("cpu_stall", 4, node="host0", gpu=1, factor=3.0, stall_s=0.3, host_state=state)
    slow = Fault("slow_worker", 4, node="host1", gpu=2, factor=2.0)
    twin, tables = run(tmp_path, [stall, slow], 20)
    (truth,) = [t for t in twin.ground_truth() if t["fault"] == "cpu_stall"]
    assert truth["host_state"] == state
    found = {f.fault_class: f for f in diagnose(tables) if f.detector == "step_attribution"}
    f = found["cpu_stall"]
    assert (f.component, f.action) == ("host0/cpu", "investigate_host")
    assert f.evidence["host_verdict"] == truth["host_state"]
    assert f.evidence["gpus"] == ["host0/gpu1"]
    assert f.evidence["gpu"]["gpu_idle_frac"] > 0.2  # the stalled GPU waits on its host
    if state == "busy":
        assert "host host0 busy" in f.summary and f.evidence["host_cpu"]["busy_frac"] > 0.9
    else:
        assert "I/O wait" in f.summary and f.evidence["host_cpu"]["iowait_frac"] > 0.4
    worker = found["slow_worker"]
    assert worker.component == "host1/gpu2"
    assert "host_verdict" not in worker.evidence and "host host1" not in worker.summary
