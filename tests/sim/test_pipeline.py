"""The 3D-parallel job simulator: 1F1B order, dependencies kept, and ground truth checked by hand."""

from __future__ import annotations

import polars as pl
import pytest

from c4.sim.pipeline import CAUSE_KINDS, Cause, PipelineJob, simulate

#: Round op times so a two-stage, one-microbatch step can be worked out on paper.
PAPER = dict(forward_s=1.0, backward_s=2.0, p2p_s=0.5, data_load_s=0.1, optimizer_s=0.2, jitter=0.0)
REQUIRED = ("job", "rank", "dp_rank", "pp_stage", "tp_rank", "step", "op", "start_s", "duration_s")
OPS = {
    "forward", "backward", "optimizer", "send_forward", "recv_forward", "send_backward", "recv_backward",
    "reduce_scatter", "all_gather", "all_reduce", "all_to_all", "data_load", "checkpoint",
}  # fmt: skip


def _compute_order(df: pl.DataFrame, rank: int, step: int = 0) -> list[str]:
    ops = df.filter(
        (pl.col("rank") == rank) & (pl.col("step") == step) & pl.col("op").is_in(["forward", "backward"])
    ).sort("start_s")
    return [f"{'F' if o == 'forward' else 'B'}{m}" for o, m in zip(ops["op"], ops["microbatch"], strict=True)]


def test_1f1b_order_per_stage():
    job = PipelineJob(pp=4, microbatches=8)
    df, _ = simulate(job, 1)
    # stage 0: three warm-up forwards (Megatron's pp - stage - 1), so four forwards before its first backward
    assert _compute_order(df, 0) == "F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7".split()
    assert _compute_order(df, 2) == "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 B7".split()
    assert _compute_order(df, 3) == [f"{x}{m}" for m in range(8) for x in "FB"]  # last stage: no warm-up


def test_fewer_microbatches_than_stages_still_completes():
    df, truth = simulate(PipelineJob(pp=4, microbatches=2, dp=2), 3)
    assert _compute_order(df, 0) == ["F0", "F1", "B0", "B1"]
    assert len(truth.step_s) == 3


def test_trace_columns_and_ops_are_the_documented_ones():
    job = PipelineJob(tp=2, pp=2, dp=4, ep=2, microbatches=4, hosts=["a", "b"], distributed_optimizer=True)
    df, _ = simulate(job, 2)
    assert set(REQUIRED) <= set(df.columns) and {
        "microbatch",
        "host",
        "local_rank",
        "comm",
        "ep_rank",
    } <= set(df.columns)
    assert set(df["op"].unique()) <= OPS and {"reduce_scatter", "all_gather", "all_to_all"} <= set(df["op"])
    assert df["duration_s"].min() >= 0
    assert df.filter(pl.col("op").is_in(["forward", "backward"]) & pl.col("microbatch").is_null()).height == 0
    # Megatron order: rank 9 = tp 1 of dp replica 0 of stage 1; 16 ranks on 2 hosts of 8 GPUs
    r9 = df.filter(pl.col("rank") == 9).row(0, named=True)
    assert (r9["pp_stage"], r9["dp_rank"], r9["tp_rank"], r9["host"], r9["local_rank"]) == (1, 0, 1, "b", 1)


def test_ops_of_a_rank_never_overlap():
    df, _ = simulate(
        PipelineJob(tp=2, pp=3, dp=2, microbatches=5), 3, [Cause("cpu_stall", [3], 5.0, stall_s=0.05)]
    )
    for _rank, g in df.sort("rank", "start_s").group_by("rank"):
        end = (g["start_s"] + g["duration_s"]).to_list()
        assert all(s >= e - 1e-12 for s, e in zip(g["start_s"].to_list()[1:], end[:-1], strict=True))


def test_no_receive_ends_before_its_send_starts():
    job = PipelineJob(tp=2, pp=4, dp=2, microbatches=6)
    df, _ = simulate(job, 2, [Cause("slow_comm", [4], 4.0)], seed=3)
    hop = job.tp * job.dp
    p2p = df.filter(pl.col("op").str.contains("send|recv"))
    key = ["step", "microbatch", "dp_rank", "tp_rank"]
    for send, recv, shift in (("send_forward", "recv_forward", 1), ("send_backward", "recv_backward", -1)):
        s = p2p.filter(pl.col("op") == send).with_columns(pl.col("pp_stage") + shift)
        r = p2p.filter(pl.col("op") == recv)
        pairs = s.join(r, on=[*key, "pp_stage"], suffix="_r")
        assert pairs.height == s.height == r.height > 0
        assert ((pairs["rank_r"] - pairs["rank"]).abs() == hop).all()
        assert (pairs["start_s_r"] + pairs["duration_s_r"] >= pairs["start_s"]).all()


def test_collective_members_end_together():
    job = PipelineJob(tp=4, pp=2, dp=4, ep=2, microbatches=3)
    df, _ = simulate(job, 2, [Cause("slow_worker", [5], 3.0)], seed=1)
    coll = df.filter(pl.col("comm").is_not_null()).with_columns(
        (pl.col("start_s") + pl.col("duration_s")).alias("end"),
        pl.int_range(pl.len()).over("rank", "step", "comm").alias("occ"),
    )
    groups = coll.group_by("comm", "step", "occ").agg(
        pl.len().alias("n"), (pl.col("end").max() - pl.col("end").min()).alias("spread")
    )
    assert groups["spread"].max() < 1e-9
    assert set(groups.filter(pl.col("comm").str.contains("/dp"))["n"]) == {4}
    assert set(groups.filter(pl.col("comm").str.contains("/tp"))["n"]) == {4}
    assert set(groups.filter(pl.col("comm").str.contains("/ep"))["n"]) == {2}  # experts: pairs of replicas


def test_paper_step_without_causes():
    job = PipelineJob(pp=2, microbatches=1, **PAPER)
    df, truth = simulate(job, 1, t0_s=0.0)
    # stage 1 receives at 1.6 (stage 0's forward ends at 1.1, plus 0.5); stage 0's backward waits until 5.1;
    # dp=1: no data-parallel collective, so the step ends with stage 0's optimizer, 7.1 + 0.2
    assert truth.step_s == pytest.approx([7.3])
    recv = df.filter((pl.col("rank") == 1) & (pl.col("op") == "recv_forward")).row(0, named=True)
    assert (recv["start_s"], recv["start_s"] + recv["duration_s"]) == pytest.approx((0.1, 1.6))


@pytest.mark.parametrize(
    "cause, step_s, blamed, victims",
    [
        # rank 1's forward and backward double: +3 s
        (Cause("slow_worker", [1], 2.0), 10.3, {1}, {0}),
        # stage 0's forward and backward take 1.5x: +0.5 + 1.0 s
        (Cause("stage_imbalance", [0], 1.5), 7.3 + 1.5, {0}, {1}),
        # both transfers 0.5 -> 1.5 s: +2 s; both ends of the link are the cause
        (Cause("slow_comm", [0], 3.0), 9.3, {0, 1}, set()),
        # rank 0's data_load 0.1 -> 1.0 s and a 0.5 s pause before F0: +1.4 s
        (Cause("cpu_stall", [0], 10.0, stall_s=0.5), 8.7, {0}, {1}),
    ],
)
def test_paper_truth(cause, step_s, blamed, victims):
    job = PipelineJob(pp=2, microbatches=1, **PAPER)
    _, truth = simulate(job, 1, [cause], t0_s=0.0)
    assert truth.step_s == pytest.approx([step_s])
    assert truth.blamed == blamed and truth.victims == victims
    assert truth.true_slowdown_frac == pytest.approx(step_s / 7.3 - 1)


def test_onset_step_and_median_over_the_steps_it_acts_on():
    job = PipelineJob(pp=2, microbatches=1, **PAPER)
    _, truth = simulate(job, 6, [Cause("slow_worker", [1], 2.0, onset_step=3)], t0_s=0.0)
    assert truth.step_s[:3] == pytest.approx(truth.ideal_step_s[:3])
    assert truth.true_slowdown_frac > 0.3


def test_data_imbalance_moves_between_replicas_and_blames_who_carried_it():
    job = PipelineJob(pp=2, dp=4, microbatches=4, jitter=0.0)
    df, truth = simulate(job, 12, [Cause("data_imbalance", [], 2.0)], seed=2)
    fwd = (
        df.filter(pl.col("op") == "forward")
        .group_by("step")
        .agg(pl.col("dp_rank").filter(pl.col("duration_s") > job.forward_s * 1.5).unique().alias("slow"))
    )
    slow = [s for s in fwd.sort("step")["slow"].to_list()]
    assert (
        all(len(s) == 1 for s in slow) and len({s[0] for s in slow}) > 1
    )  # one replica a step, not always the same
    assert truth.blamed == {r for d in {s[0] for s in slow} for r in job.replica_ranks(d)}
    assert truth.victims == set(range(job.world)) - truth.blamed
    assert truth.true_slowdown_frac > 0.5


def test_same_seed_same_trace_and_no_cause_no_slowdown():
    job = PipelineJob(tp=2, pp=2, dp=2, microbatches=4)
    a, ta = simulate(job, 3, seed=7)
    b, _ = simulate(job, 3, seed=7)
    assert a.equals(b) and ta.true_slowdown_frac == 0 and not ta.blamed and not ta.victims


def test_hang_stops_the_job_where_it_waits():
    job = PipelineJob(pp=2, microbatches=1, **PAPER)
    df, truth = simulate(job, 3, [Cause("hang", [1], onset_step=1)], t0_s=0.0)
    assert df.filter((pl.col("rank") == 1) & (pl.col("step") >= 1)).height == 0
    assert df.filter((pl.col("rank") == 0) & (pl.col("step") == 1))["op"].to_list() == [
        "data_load",
        "forward",
    ]
    assert len(truth.step_s) == 1 and truth.true_slowdown_frac == float("inf") and truth.victims == {0}


def test_bad_causes_and_shapes_are_refused():
    with pytest.raises(ValueError, match="cause kind"):
        Cause("gremlin", [0])
    with pytest.raises(ValueError, match="not ranks of job"):
        simulate(PipelineJob(pp=2), 1, [Cause("slow_worker", [2])])
    with pytest.raises(ValueError, match="ep=3 must divide dp=4"):
        PipelineJob(dp=4, ep=3)
    with pytest.raises(ValueError, match="do not fit"):
        PipelineJob(tp=8, pp=2, hosts=["a"])
    assert set(CAUSE_KINDS) >= {"slow_worker", "stage_imbalance", "data_imbalance", "cpu_stall", "slow_comm"}
