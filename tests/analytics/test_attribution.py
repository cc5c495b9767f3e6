"""Dependency-aware step attribution on simulated PP x DP jobs: the cause is named, its victims only affected."""

from __future__ import annotations

import numpy as np
import pytest
from testkit.step_sim import SimCause, rank_of, simulate, true_slowdown_frac

from c4.analytics.attribution import attribute
from c4.analytics.step_graph import build_graph, replay
from c4.analytics.step_trace import validate_trace

PP, DP = 4, 2


@pytest.fixture(scope="module")
def healthy():
    return simulate(pp=PP, dp=DP, seed=1)


def _one(trace):
    [job] = attribute(validate_trace(trace))
    return job


def test_replay_with_actual_durations_reproduces_the_trace(healthy):
    g = build_graph(healthy, "job1")
    rep = replay(g, [g.own_s], [g.gap_s])
    np.testing.assert_allclose(rep.step_s[:, 0], g.actual_step_s, atol=2e-6)  # epoch floats: ~0.2 us


def test_healthy_job_with_jitter_raises_nothing(healthy):
    job = _one(healthy)
    assert job.findings == []
    assert job.steps == 12
    assert 0 <= job.slowdown_frac < 0.05


@pytest.mark.parametrize("seed", [2, 3, 4])
def test_healthy_jobs_on_other_seeds_raise_nothing(seed):
    assert _one(simulate(pp=PP, dp=DP, seed=seed, jitter=0.03)).findings == []


def test_slow_worker_is_blamed_alone_and_its_replica_is_affected(healthy):
    slow = rank_of(1, 0, DP)
    trace = simulate(pp=PP, dp=DP, seed=1, causes=[SimCause("slow_worker", ranks=[slow], factor=2.3)])
    job = _one(trace)
    assert [f.fault_class for f in job.findings] == ["slow_worker"]
    [f] = job.findings
    assert f.component == f"job1/rank{slow}"
    assert f.detector == "step_attribution" and f.job == "job1" and f.action == "investigate"
    replica = {f"job1/rank{rank_of(s, 0, DP)}" for s in range(PP)} - {f"job1/rank{slow}"}
    assert replica <= set(f.affected)
    assert f"job1/rank{slow}" not in f.affected
    truth = true_slowdown_frac(trace, healthy)
    assert abs(f.slowdown_frac - truth) / truth <= 0.05
    assert job.by_worker[0]["rank"] == slow


def test_slow_worker_names_its_gpu_when_host_is_known():
    trace = simulate(
        pp=PP, dp=DP, seed=1, causes=[SimCause("slow_worker", ranks=[5], factor=2.0)], hosts=True
    )
    [f] = _one(trace).findings
    assert (f.component_type, f.component, f.node) == ("gpu", "node0/gpu5", "node0")


def test_long_last_stage_is_stage_imbalance_not_a_slow_worker(healthy):
    trace = simulate(pp=PP, dp=DP, seed=1, causes=[SimCause("stage", stage=PP - 1, factor=2.0)])
    job = _one(trace)
    assert [f.fault_class for f in job.findings] == ["stage_imbalance"]
    [f] = job.findings
    assert (f.component, f.component_type, f.action) == ("job1/stage3", "job_stage", "rebalance_stages")
    truth = true_slowdown_frac(trace, healthy)
    assert abs(f.slowdown_frac - truth) / truth <= 0.05
    assert job.by_stage[0]["pp_stage"] == PP - 1


def test_random_ranks_slow_on_random_steps_is_data_imbalance(healthy):
    trace = simulate(pp=PP, dp=DP, seed=1, causes=[SimCause("data_imbalance", factor=1.6)])
    job = _one(trace)
    assert [f.fault_class for f in job.findings] == ["data_imbalance"]
    [f] = job.findings
    assert (f.component, f.action) == ("job1", "balance_data")
    assert len(f.evidence["slow_ranks"]) >= 2
    truth = true_slowdown_frac(trace, healthy)
    assert abs(f.slowdown_frac - truth) / truth <= 0.05


def test_gc_gaps_before_forward_are_a_cpu_stall(healthy):
    rank = rank_of(2, 1, DP)
    trace = simulate(pp=PP, dp=DP, seed=1, causes=[SimCause("cpu_stall", ranks=[rank], gap_s=0.03)])
    job = _one(trace)
    assert [f.fault_class for f in job.findings] == ["cpu_stall"]
    [f] = job.findings
    assert (f.component, f.action) == (f"job1/rank{rank}", "investigate_host")
    assert f"job1/rank{rank}" not in f.affected
    truth = true_slowdown_frac(trace, healthy)
    assert abs(f.slowdown_frac - truth) / truth <= 0.05


def test_gc_gaps_on_every_other_step_cost_only_where_they_act(healthy):
    trace = simulate(pp=PP, dp=DP, seed=1, causes=[SimCause("cpu_stall", ranks=[2], gap_s=0.05, every=2)])
    [f] = _one(trace).findings
    assert f.fault_class == "cpu_stall"
    assert f.evidence["steps_acting"] == 6
    assert f.slowdown_frac > 0.1


def test_slow_p2p_link_is_slow_comm(healthy):
    a, b = rank_of(1, 0, DP), rank_of(2, 0, DP)
    trace = simulate(pp=PP, dp=DP, seed=1, causes=[SimCause("slow_link", ranks=[a, b], factor=8.0)])
    job = _one(trace)
    assert [f.fault_class for f in job.findings] == ["slow_comm"]
    [f] = job.findings
    assert f.component == f"job1/rank{a}->job1/rank{b}"
    assert f.action == "investigate_link"
    truth = true_slowdown_frac(trace, healthy)
    assert abs(f.slowdown_frac - truth) / truth <= 0.05


def test_two_jobs_are_attributed_apart():
    import polars as pl

    slow = simulate(pp=2, dp=2, seed=5, job="a", causes=[SimCause("slow_worker", ranks=[1], factor=2.0)])
    ok = simulate(pp=2, dp=2, seed=6, job="b")
    jobs = attribute(validate_trace(pl.concat([slow, ok])))
    assert [j.job for j in jobs] == ["a", "b"]
    assert [f.component for f in jobs[0].findings] == ["a/rank1"]
    assert jobs[1].findings == []


def test_too_few_steps_give_no_findings():
    trace = simulate(pp=PP, dp=DP, seed=1, steps=2, causes=[SimCause("slow_worker", ranks=[3], factor=2.3)])
    job = _one(trace)
    assert job.steps == 2 and job.findings == []
    assert job.slowdown_frac > 0.3


def test_incomplete_last_step_is_skipped_and_counted(healthy):
    cut = healthy.filter(~((healthy["step"] == 11) & (healthy["rank"] == 7)))
    [job] = attribute(cut)
    assert (job.steps, job.steps_skipped) == (11, 1)


def test_as_json_is_serialisable(healthy):
    import json

    trace = simulate(pp=PP, dp=DP, seed=1, causes=[SimCause("slow_worker", ranks=[3], factor=2.3)])
    out = json.loads(json.dumps(_one(trace).as_json()))
    assert set(out) >= {
        "job",
        "steps",
        "actual_step_s",
        "ideal_step_s",
        "slowdown_frac",
        "by_worker",
        "by_stage",
        "by_op",
        "findings",
    }
    assert out["findings"][0]["class"] == "slow_worker"


def test_few_microbatches_and_more_jitter_raise_nothing():
    for seed in range(3):
        assert _one(simulate(pp=1, dp=8, mb=1, seed=seed, jitter=0.05)).findings == []


def test_two_causes_each_with_its_own_marginal_cost(healthy):
    causes = [SimCause("slow_worker", ranks=[2], factor=1.8), SimCause("stage", stage=3, factor=1.5)]
    trace = simulate(pp=PP, dp=DP, seed=1, causes=causes)
    found = {f.fault_class: f for f in _one(trace).findings}
    assert set(found) == {"slow_worker", "stage_imbalance"}
    for cls, cause in (("slow_worker", causes[0]), ("stage_imbalance", causes[1])):
        without = simulate(pp=PP, dp=DP, seed=1, causes=[c for c in causes if c is not cause])
        truth = true_slowdown_frac(trace, without)
        assert abs(found[cls].slowdown_frac - truth) / truth <= 0.05


def test_a_cause_hidden_behind_another_is_named_with_its_cost_alone(healthy):
    causes = [SimCause("slow_worker", ranks=[2], factor=1.8), SimCause("cpu_stall", ranks=[7], gap_s=0.03)]
    trace = simulate(pp=PP, dp=DP, seed=1, causes=causes)
    found = {f.fault_class: f for f in _one(trace).findings}
    assert set(found) == {"slow_worker", "cpu_stall"}
    stall = found["cpu_stall"]
    assert stall.slowdown_frac < 0.01  # the slow worker hides it today
    alone = simulate(pp=PP, dp=DP, seed=1, causes=[causes[1]])
    truth = true_slowdown_frac(alone, healthy)
    assert abs(stall.evidence["alone_slowdown_frac"] - truth) / truth <= 0.05
    assert "job1/rank7" not in stall.affected


def test_host_clock_offsets_of_milliseconds_change_nothing(healthy):
    import polars as pl

    offsets_s = {
        r: (-1) ** r * 0.001 * (r % 5) for r in range(PP * DP)
    }  # up to 4 ms, more than a p2p transfer
    shift = pl.col("rank").replace_strict(offsets_s, return_dtype=pl.Float64)
    assert _one(healthy.with_columns(pl.col("start_s") + shift)).findings == []
    trace = simulate(pp=PP, dp=DP, seed=1, causes=[SimCause("cpu_stall", ranks=[5], gap_s=0.03)])
    [f] = _one(trace.with_columns(pl.col("start_s") + shift)).findings
    truth = true_slowdown_frac(trace, healthy)
    assert f.fault_class == "cpu_stall" and abs(f.slowdown_frac - truth) / truth <= 0.05


def test_clock_offsets_from_shared_ends():
    import polars as pl

    from c4.analytics.step_clock import clock_offsets_s

    nodes = pl.DataFrame(
        {
            "rank": [0, 1, 1, 2, 3],
            "end_s": [10.0, 10.5, 20.5, 19.8, 5.0],
            "group": [1, 1, 2, 2, None],
        },
        schema={"rank": pl.Int64, "end_s": pl.Float64, "group": pl.UInt64},
    )
    off = clock_offsets_s(nodes)
    assert off[1] - off[0] == pytest.approx(0.5)
    assert off[2] - off[1] == pytest.approx(-0.7)
    assert 3 not in off  # shares nothing: left alone


@pytest.mark.parametrize("tp_sync", [False, True])
def test_tensor_parallel_jobs(tp_sync):
    base = simulate(pp=PP, dp=DP, tp=2, seed=1, tp_sync=tp_sync)
    assert _one(base).findings == []
    slow = rank_of(1, 0, DP, tp_rank=1, tp=2)
    peer = rank_of(1, 0, DP, tp_rank=0, tp=2)
    trace = simulate(
        pp=PP, dp=DP, tp=2, seed=1, tp_sync=tp_sync, causes=[SimCause("slow_worker", ranks=[slow])]
    )
    [f] = _one(trace).findings
    truth = true_slowdown_frac(trace, base)
    assert f.fault_class == "slow_worker" and abs(f.slowdown_frac - truth) / truth <= 0.05
    if tp_sync:  # the TP peers wait for each other inside forward/backward: the group, not one of them
        assert (f.component_type, f.component) == ("tp_group", "job1/stage1/dp0/tp")
        assert f.evidence["ranks"] == [peer, slow]
        assert f"job1/rank{peer}" not in f.affected and f"job1/rank{slow}" not in f.affected
    else:
        assert (
            f.component == f"job1/rank{slow}"
        )  # its TP peer computes on (in this model it never waits on it)


def test_tp_peers_waiting_on_a_slow_link_are_not_blamed():
    a, b = rank_of(1, 0, DP, 1, 2), rank_of(2, 0, DP, 1, 2)
    trace = simulate(
        pp=PP, dp=DP, tp=2, seed=1, tp_sync=True, causes=[SimCause("slow_link", ranks=[a, b], factor=8)]
    )
    assert [(f.fault_class, f.component) for f in _one(trace).findings] == [
        ("slow_comm", f"job1/rank{a}->job1/rank{b}")
    ]


def test_a_worker_that_turns_slow_mid_trace_is_a_slow_worker_from_its_onset(healthy):
    from testkit.step_sim import step_times_s

    trace = simulate(
        pp=PP, dp=DP, seed=1, causes=[SimCause("slow_worker", ranks=[3], factor=2.0, onset_step=8)]
    )
    [f] = _one(trace).findings
    assert (f.fault_class, f.component) == ("slow_worker", "job1/rank3")
    assert (f.evidence["first_step"], f.evidence["steps_acting"]) == (8, 4)
    truth = float(np.median(step_times_s(trace)[8:]) / np.median(step_times_s(healthy)[8:]) - 1)
    assert abs(f.slowdown_frac - truth) / truth <= 0.05


def test_megatron_batched_p2p_overlapping_records_are_issued_together():
    base = simulate(pp=PP, dp=DP, seed=1, batched_p2p=True)
    g = build_graph(base, "job1")
    assert any(lay.n_batches < lay.hi - lay.lo for lay in g.steps)  # send_forward+recv_backward overlap
    rep = replay(g, [g.own_s], [g.gap_s])
    np.testing.assert_allclose(rep.step_s[:, 0], g.actual_step_s, atol=2e-6)
    assert _one(base).findings == []
    for cause, cls in (
        (SimCause("slow_worker", ranks=[rank_of(1, 0, DP)], factor=2.3), "slow_worker"),
        (SimCause("stage", stage=PP - 1, factor=2.0), "stage_imbalance"),
        (SimCause("slow_link", ranks=[rank_of(1, 0, DP), rank_of(2, 0, DP)], factor=8.0), "slow_comm"),
    ):
        trace = simulate(pp=PP, dp=DP, seed=1, batched_p2p=True, causes=[cause])
        [f] = _one(trace).findings
        truth = true_slowdown_frac(trace, base)
        assert f.fault_class == cls and abs(f.slowdown_frac - truth) / truth <= 0.05


def test_a_slow_data_parallel_group_is_slow_comm_on_its_communicator():
    base = simulate(pp=PP, dp=DP, tp=2, seed=1)
    trace = simulate(
        pp=PP, dp=DP, tp=2, seed=1, causes=[SimCause("slow_coll", stage=0, ranks=[1], factor=5.0)]
    )
    [f] = _one(trace).findings
    assert (f.fault_class, f.component_type, f.component) == (
        "slow_comm",
        "communicator",
        "job1/all_reduce/stage0/tp1",
    )
    assert f.communicator == "all_reduce/stage0/tp1"
    members = {f"job1/rank{rank_of(0, d, DP, 1, 2)}" for d in range(DP)}
    assert not members & set(f.affected)
    truth = true_slowdown_frac(trace, base)
    assert abs(f.slowdown_frac - truth) / truth <= 0.05


#: Four replicas taking turns at the long batches, 3-4 steps running each: the last run (replica 3, never slow
#: before) looks like a worker's onset.
TURNS = [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3]


def test_replicas_slow_in_turns_across_their_stages_are_data_imbalance_not_a_slow_worker():
    trace = simulate(pp=2, dp=4, seed=1, steps=len(TURNS), causes=[SimCause("data_imbalance", turns=TURNS)])
    [f] = _one(trace).findings
    assert (f.fault_class, f.component) == ("data_imbalance", "job1")
    assert len(f.evidence["slow_ranks"]) == 8  # every rank of every replica, all slow on their turns


def test_one_replica_slow_on_every_stage_from_an_onset_is_its_data_not_a_worker():
    turns = [-1] * 9 + [1] * 3  # nobody else slow yet: only the shape (every stage of one replica) tells
    trace = simulate(pp=PP, dp=DP, seed=1, causes=[SimCause("data_imbalance", turns=turns)])
    assert [f.fault_class for f in _one(trace).findings] == ["data_imbalance"]


def test_single_stage_replicas_slow_in_turns_need_more_steps_to_be_a_slow_worker():
    # one stage, one rank per replica: only time tells; others were slow before, so 4 steps running is not enough
    trace = simulate(pp=1, dp=4, seed=1, steps=len(TURNS), causes=[SimCause("data_imbalance", turns=TURNS)])
    assert [f.fault_class for f in _one(trace).findings] == ["data_imbalance"]


@pytest.mark.parametrize("onset_step", [0, 8])
def test_a_slow_worker_is_still_found_from_its_onset_in_a_data_imbalanced_job(onset_step):
    steps = 16
    turns = [k % 4 for k in range(steps)]  # every replica has its long batches, one after the other
    causes = [
        SimCause("data_imbalance", turns=turns, factor=1.5),
        SimCause("slow_worker", ranks=[0], factor=2.0, onset_step=onset_step),
    ]
    found = {
        f.fault_class: f for f in _one(simulate(pp=1, dp=4, seed=1, steps=steps, causes=causes)).findings
    }
    assert set(found) == {"slow_worker", "data_imbalance"}
    assert found["slow_worker"].component == "job1/rank0"
    # its own long batch at step 4 is not its onset: from there it was slow on 9 of 12 steps (< 80%)
    assert found["slow_worker"].evidence["first_step"] == onset_step
    assert 0 not in found["data_imbalance"].evidence["slow_ranks"]


def test_a_slow_worker_alone_needs_only_min_onset_steps():
    trace = simulate(
        pp=1, dp=4, seed=1, causes=[SimCause("slow_worker", ranks=[2], factor=2.0, onset_step=9)]
    )
    [f] = _one(trace).findings
    assert (f.fault_class, f.component, f.evidence["steps_acting"]) == ("slow_worker", "job1/rank2", 3)
