"""Attribution on colleague B's twin (sim/pipeline.py: Megatron 1F1B, TP x PP x DP, ground truth).

Each cause must give one finding of its class, blame no rank that only waited, and cost within 5% of
the twin's true step slowdown; a healthy job gives nothing.
"""

from __future__ import annotations

import pytest

from c4.analytics.attribution import attribute
from c4.analytics.step_trace import validate_trace
from c4.sim.pipeline import Cause, PipelineJob, simulate

JOB = PipelineJob(name="j", tp=1, pp=4, dp=2, microbatches=8, hosts=["h0"], gpus_per_host=8)
TP_JOB = PipelineJob(name="k", tp=2, pp=4, dp=2, microbatches=8, hosts=["h0", "h1"], gpus_per_host=8)


def _blamed_ranks(f) -> set[int]:
    ev = f.evidence
    if "rank" in ev:
        return {ev["rank"]}
    if "sender" in ev:
        return {ev["sender"], ev["receiver"]}
    return set(ev.get("ranks", []))


CASES = [
    (JOB, Cause("slow_worker", ranks=[JOB.rank(1, 0, 0)], factor=2.3), "slow_worker"),
    (JOB, Cause("stage_imbalance", ranks=JOB.stage_ranks(3), factor=2.0), "stage_imbalance"),
    (JOB, Cause("data_imbalance", factor=1.6), "data_imbalance"),
    (JOB, Cause("cpu_stall", ranks=[JOB.rank(2, 1, 0)], factor=1.0, stall_s=0.05), "cpu_stall"),
    (JOB, Cause("slow_comm", ranks=[JOB.rank(1, 0, 0)], factor=8.0), "slow_comm"),
    (TP_JOB, Cause("slow_worker", ranks=[TP_JOB.rank(1, 0, 1)], factor=2.0), "slow_worker"),
    (TP_JOB, Cause("slow_comm", ranks=[TP_JOB.rank(1, 0, 1)], factor=8.0), "slow_comm"),
    (TP_JOB, Cause("cpu_stall", ranks=[TP_JOB.rank(2, 1, 0)], factor=1.0, stall_s=0.05), "cpu_stall"),
]


@pytest.mark.parametrize("job", [JOB, TP_JOB], ids=["pp4dp2", "tp2pp4dp2"])
def test_healthy_twin_job_raises_nothing(job):
    trace, _ = simulate(job, 12, [], seed=0)
    [a] = attribute(validate_trace(trace))
    assert a.findings == []


@pytest.mark.parametrize(("job", "cause", "cls"), CASES, ids=[f"{j.name}-{c.kind}" for j, c, _ in CASES])
def test_twin_cause_is_found_without_blaming_victims(job, cause, cls):
    trace, truth = simulate(job, 12, [cause], seed=0)
    [a] = attribute(validate_trace(trace))
    assert [f.fault_class for f in a.findings] == [cls]
    [f] = a.findings
    assert not _blamed_ranks(f) & truth.victims
    assert abs(f.slowdown_frac - truth.true_slowdown_frac) / truth.true_slowdown_frac <= 0.05
    assert not {f"{job.name}/rank{r}" for r in truth.blamed} & set(f.affected)
