"""The jobs twin through the production step_trace sampler and the collector's attribution: the cause, never a victim."""

from __future__ import annotations

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
#: Two small jobs on four nodes: a takes host0-1 (tp 8, pp 2), b host2-3 (tp 4, pp 2, dp 2).
JOBS = [
    {"name": "a", "tp": 8, "pp": 2, "dp": 1, "microbatches": 4, "first_node": 0},
    {"name": "b", "tp": 4, "pp": 2, "dp": 2, "microbatches": 4, "first_node": 2},
]


def step_ops(tmp_path: Path, faults: list[Fault], ticks: int) -> tuple[JobsTwin, pl.DataFrame, int]:
    """Run the twin; every node's agent config as the sim runner writes it; step_ops rows as the collector stores them."""
    twin = JobsTwin(nodes=4, leaves=2, spines=2, seed=1, jobs=JOBS, faults=faults, horizon_s=30)
    runner = SimRunner(tmp_path, twin, "t", epoch_s=EPOCH_S)
    readers = {}
    for host, w in runner.writers.items():
        cfg = AgentConfig(
            node=host, samplers={"step_trace": w.sampler_config()["step_trace"]}, spool_dir=tmp_path / "s"
        )
        (readers[host],) = build_samplers(cfg, context_from(cfg, env={}))
        assert readers[host].probe()
    cat, tables = load(), []
    for _ in range(ticks):
        runner.step()
        for host, s in readers.items():
            rows = s.sampler.sample(0).get("step_ops", [])
            converted = convert_rows(cat, "step_ops", rows, {"node": host})
            assert converted.dropped == 0
            tables.append(converted.table)
    skipped = sum(s.sampler.records_skipped for s in readers.values())
    return twin, pl.concat([pl.from_arrow(t) for t in tables]), skipped


@pytest.mark.parametrize(
    "fault, cls, component",
    [
        (Fault("slow_worker", 5, node="host3", gpu=1, factor=2.0), "slow_worker", "host3/gpu1"),
        (Fault("stage_imbalance", 0, job="b", stage=1, factor=1.5), "stage_imbalance", "b/stage1"),
    ],
)
def test_the_twins_step_traces_name_the_cause_and_no_victim(tmp_path, fault, cls, component):
    twin, ops, skipped = step_ops(tmp_path, [fault], 25)
    assert skipped == 0 and set(ops["job"].unique()) == {"a", "b"}
    found = [f for f in diagnose({"step_ops": ops}) if f.detector == "step_attribution"]
    truth = twin.pipeline_truth()["b"]
    assert [(f.fault_class, f.component, f.job) for f in found] == [(cls, component, "b")]
    (f,) = found
    victims = {f"b/rank{r}" for r in truth.victims}
    assert set(f.affected) <= victims | {f"b/rank{r}" for r in range(16)} - {
        f"b/rank{r}" for r in truth.blamed
    }
    assert f.slowdown_frac == pytest.approx(truth.true_slowdown_frac, rel=0.25)
