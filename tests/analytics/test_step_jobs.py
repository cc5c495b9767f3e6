"""Step-time attribution in the collector's diagnosis: step_ops window -> complete steps -> findings and rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from testkit.step_sim import SimCause, simulate

from c4.agent.batcher import convert_rows
from c4.agent.step_trace import StepTraceSampler
from c4.analytics.diagnose import diagnose
from c4.analytics.runner import DiagnosisRunner
from c4.analytics.step_jobs import AttributionMemo, attribution_rows, complete_steps, job_attributions
from c4.catalogue import load
from c4.collector.store import PendingBatch, Store
from c4.step_trace import StepTraceWriter

T0 = 1_764_770_000.0


def as_step_ops(trace: pl.DataFrame, node: str = "n1") -> pl.DataFrame:
    """A trace as the step_ops table holds it (ts = op start, the agent's node, '' for a host or comm not given)."""
    absent = [
        c for c in load()["step_ops"].column_names if c not in trace.columns and c not in ("ts", "node")
    ]
    return trace.with_columns(
        pl.from_epoch((pl.col("start_s") * 1e6).cast(pl.Int64), time_unit="us").alias("ts"),
        pl.lit(node).alias("node"),
        *(pl.lit("" if c in ("host", "comm") else None).alias(c) for c in absent),
    )


def slow_worker_job(job: str = "job1", steps: int = 10) -> pl.DataFrame:
    """A PP=4 x DP=2 job in which rank 5 (stage 2) computes 2.3x slower on every step."""
    return simulate(
        pp=4,
        dp=2,
        mb=4,
        steps=steps,
        causes=[SimCause("slow_worker", ranks=[5], factor=2.3)],
        job=job,
        t0_s=T0,
    )


def test_the_memo_replays_a_job_only_when_its_rows_change():
    slow = as_step_ops(slow_worker_job("job1", steps=8))
    other = as_step_ops(slow_worker_job("job2", steps=8))
    memo = AttributionMemo()
    first = job_attributions(pl.concat([slow, other]), memo=memo)
    assert memo.misses == 2 and memo.hits == 0
    again = job_attributions(pl.concat([other, slow]), memo=memo)  # same rows, another order: no replay
    assert memo.misses == 2 and memo.hits == 2
    assert [a.job for a in again] == [a.job for a in first] and again[0] is first[0]
    # job1 gains a step: only job1 is replayed, and its answer is the one a fresh attribution gives
    longer = as_step_ops(slow_worker_job("job1", steps=9))
    moved = job_attributions(pl.concat([longer, other]), memo=memo)
    assert memo.misses == 3 and memo.hits == 3
    fresh = job_attributions(pl.concat([longer, other]))
    assert moved[0].steps == fresh[0].steps != first[0].steps
    assert moved[0].slowdown_frac == fresh[0].slowdown_frac
    job_attributions(other, memo=memo)  # job1 left the window: forgotten
    assert memo.hits == 4 and memo.misses == 3
    job_attributions(pl.concat([longer, other]), memo=memo)
    assert memo.misses == 4


def test_complete_steps_cut_the_window_edges_and_a_lagging_rank():
    trace = as_step_ops(simulate(pp=2, dp=2, mb=2, steps=8, t0_s=T0))
    # the window began inside step 0; rank 3's agent has delivered up to step 5 only
    window = trace.filter(
        ~((pl.col("step") == 0) & (pl.col("rank") < 2)) & ~((pl.col("rank") == 3) & (pl.col("step") > 5))
    )
    kept = complete_steps(window)
    # step 1 is the first step ranks 0 and 1 have in the window, whole (as many ops as their step 2)
    assert sorted(kept["step"].unique().to_list()) == [1, 2, 3, 4]
    # the window began inside rank 0's step 1 (its first op is gone): step 1 may lack more, it goes
    first_op = pl.col("start_s") == pl.col("start_s").min().over("rank", "step")
    cut = complete_steps(window.filter(~((pl.col("rank") == 0) & (pl.col("step") == 1) & first_op)))
    assert sorted(cut["step"].unique().to_list()) == [2, 3, 4]
    # a job's first steps count as soon as every rank has begun the next one
    start = complete_steps(trace.filter(pl.col("step") <= 3))
    assert sorted(start["step"].unique().to_list()) == [0, 1, 2]
    assert "ts" not in kept.columns and "node" not in kept.columns
    doubled = complete_steps(pl.concat([window, window]))  # an agent's re-sent batch
    assert doubled.height == kept.height
    assert sorted(complete_steps(window, max_steps=2)["step"].unique().to_list()) == [3, 4]  # the newest


def test_attribution_blames_the_slow_worker_and_names_its_victims():
    ops = as_step_ops(
        pl.concat([slow_worker_job("jobA"), simulate(pp=2, dp=2, mb=2, steps=10, job="jobB", t0_s=T0)])
    )
    found = {a.job: a for a in job_attributions(ops)}
    assert set(found) == {"jobA", "jobB"}
    a = found["jobA"]
    assert a.slowdown_frac > 0.3 and a.steps == 9  # the last step is cut (it may still be running)
    (worker,) = [f for f in a.findings if f.fault_class == "slow_worker"]
    assert worker.component == "jobA/rank5" and worker.job == "jobA"
    assert "jobA/rank5" not in worker.affected and worker.affected
    assert not [f for f in found["jobB"].findings if f.fault_class == "slow_worker"]


def test_a_job_whose_trace_breaks_the_rules_is_left_out_not_the_others(caplog):
    good = slow_worker_job("good")
    bad = simulate(pp=2, dp=2, mb=2, steps=10, job="bad", t0_s=T0)
    bad = bad.filter(~((pl.col("op") == "send_forward") & (pl.col("step") == 4)))  # recvs without their sends
    found = job_attributions(as_step_ops(pl.concat([good, bad])))
    assert [a.job for a in found] == ["good"]
    assert "job=bad" in caplog.text


def test_rows_for_the_step_attribution_table_fit_the_catalogue():
    (a,) = job_attributions(as_step_ops(slow_worker_job()))
    now = datetime(2026, 1, 1)
    rows = attribution_rows([a], now)
    scopes = pl.DataFrame(rows)["scope"].value_counts().sort("scope").to_dicts()
    assert {d["scope"]: d["count"] for d in scopes} == {
        "job": 1,
        "worker": len(a.by_worker),
        "stage": len(a.by_stage),
        "op": len(a.by_op),
    }
    spec = load()["step_attribution"]
    table = PendingBatch.internal(spec, rows).table
    job_row = table.to_pylist()[0]
    assert (job_row["scope"], job_row["actual_step_s"], job_row["ideal_step_s"]) == (
        "job",
        a.actual_step_s,
        a.ideal_step_s,
    )
    worker = next(r for r in table.to_pylist() if r["part"] == "rank5")
    assert worker["pp_stage"] == 2 and worker["cost_s"] > 0


def test_diagnose_adds_the_attribution_findings():
    found = diagnose({"step_ops": as_step_ops(slow_worker_job())})
    assert [
        f.component for f in found if f.detector == "step_attribution" and f.fault_class == "slow_worker"
    ] == ["job1/rank5"]


def test_runner_stores_findings_and_breakdown_from_the_step_ops_window(tmp_path):
    cat = load()
    store = Store(tmp_path / "c4.duckdb", cat)
    trace = as_step_ops(slow_worker_job())
    store.commit(
        [PendingBatch("agent-n1", 1, cat["step_ops"], trace.select(cat["step_ops"].column_names).to_arrow())]
    )
    runner = DiagnosisRunner(cat, window_s=3600)
    now = datetime.fromtimestamp(T0, UTC).replace(tzinfo=None) + timedelta(seconds=60)
    cur = store.cursor()
    try:
        faults = runner.run_once(cur, now).to_pylist()
    finally:
        cur.close()
        store.close()
    worker = next(f for f in faults if f["component"] == "job1/rank5")
    assert worker["job"] == "job1" and worker["slowdown_frac"] > 0 and worker["affected"]
    parts = {(r["scope"], r["part"]) for r in runner.attribution.to_pylist()}
    assert ("job", "") in parts and ("worker", "rank5") in parts and ("stage", "stage2") in parts


def test_from_the_training_loops_writer_through_the_agent_to_the_cause(tmp_path):
    """Each rank writes its ops with c4.step_trace.StepTraceWriter; the agent's sampler reads the directory;
    the rows the collector would store are attributed to the slow worker."""
    trace = slow_worker_job()
    for (rank,), ops in trace.sort("rank", "start_s").group_by(["rank"], maintain_order=True):
        first = ops.row(0, named=True)
        with StepTraceWriter(
            tmp_path, "job1", rank, first["dp_rank"], first["pp_stage"], first["tp_rank"]
        ) as w:
            for r in ops.iter_rows(named=True):
                w.op(r["step"], r["op"], r["start_s"], r["duration_s"], microbatch=r["microbatch"])
    sampler = StepTraceSampler(tmp_path)
    sampler.probe()
    rows = sampler.sample(0)["step_ops"]
    assert len(rows) == trace.height and sampler.records_skipped == 0
    stored = pl.from_arrow(convert_rows(load(), "step_ops", rows, {"node": "n1"}).table)
    (a,) = job_attributions(stored)
    assert [f.component for f in a.findings if f.fault_class == "slow_worker"] == ["job1/rank5"]


def test_the_agent_checks_columns_by_the_same_rules_as_the_trace_validator():
    """The agent may import only c4/: its copy of the column rules must be analytics.step_trace's."""
    from c4.agent import step_trace as agent_rules
    from c4.analytics import step_trace as rules

    assert set(agent_rules.REQUIRED) == set(rules.REQUIRED)
    assert {c for c, k in {**agent_rules.REQUIRED, **agent_rules.OPTIONAL}.items() if k is int} == set(
        rules.INT_COLUMNS + rules.OPTIONAL_INT
    )
    assert {c for c, k in agent_rules.REQUIRED.items() if k is float} == set(rules.FLOAT_COLUMNS)
    assert {c for c, k in agent_rules.OPTIONAL.items() if k is str} == set(rules.OPTIONAL_STR)
    assert set(load()["step_ops"].column_names) == {
        "ts",
        "node",
        *agent_rules.REQUIRED,
        *agent_rules.OPTIONAL,
    }


def test_slow_worker_takes_the_action_of_its_gpus_hardware_fault():
    """A slow worker whose GPU is throttled is that hardware fault's to act on; one no counter explains stays open."""
    from c4.analytics.diagnose import joined_with_hardware
    from c4.analytics.findings import Finding

    def slow(component):
        return Finding(
            "step_attribution",
            "slow_worker",
            "gpu",
            component,
            component.split("/")[0],
            None,
            None,
            0.9,
            "investigate",
            f"{component} computes slower",
            job="j",
            slowdown_frac=0.4,
        )

    throttled = Finding(
        "gpu_throttle",
        "hardware",
        "gpu",
        "host2/gpu3",
        "host2",
        None,
        None,
        0.9,
        "drain_node",
        "host2/gpu3 throttled",
    )
    other_gpu = Finding(
        "xid", "hardware", "gpu", "host2/gpu4", "host2", None, None, 0.95, "reset_gpu", "Xid 79"
    )
    found = joined_with_hardware([slow("host2/gpu3"), slow("host5/gpu0"), throttled, other_gpu])
    hit, miss = found[0], found[1]
    assert hit.action == "drain_node" and hit.evidence["hardware"] == ["gpu_throttle:host2/gpu3"]
    assert "throttled" in hit.summary
    assert miss.action == "investigate" and miss.evidence["hardware"] == []
    assert "no GPU counter explains it" in miss.summary


def test_a_restart_from_a_checkpoint_keeps_the_new_run_only():
    old = slow_worker_job("job1", steps=8)  # killed after step 7; its last checkpoint was after step 3
    end = float((old["start_s"] + old["duration_s"]).max())
    new = slow_worker_job("job1", steps=8).with_columns(  # relaunched 30 s later at step 4: steps 4..7 again
        pl.col("step") + 4, pl.col("start_s") - T0 + end + 30.0
    )
    both = as_step_ops(pl.concat([old, new]))
    kept = complete_steps(both)
    assert kept["start_s"].min() > end  # nothing of the old run
    assert sorted(kept["step"].unique().to_list()) == list(range(4, 11))  # the new run's whole steps
    found = job_attributions(both)  # the repeated step numbers no longer break the trace
    assert [a.job for a in found] == ["job1"]


def test_a_run_that_hung_in_the_step_after_its_checkpoint_restarts_that_step_under_its_number():
    """The old run got through part of step 4 and hung; the relaunch starts step 4 over. No step number
    drops, yet the two runs' step 4 are not one step (read as one, its silence was a host stall)."""
    old = slow_worker_job("job1", steps=5)  # steps 0..4 complete
    partial = old.filter(pl.col("step") == 4).sort("start_s").head(5)  # step 4 cut short by the hang
    old = pl.concat([old.filter(pl.col("step") < 4), partial])
    end = float((old["start_s"] + old["duration_s"]).max())
    new = slow_worker_job("job1", steps=8).with_columns(  # relaunched 20 s later at step 4: 4..11
        pl.col("step") + 4, pl.col("start_s") - T0 + end + 20.0
    )
    kept = complete_steps(as_step_ops(pl.concat([old, new])))
    assert kept["start_s"].min() > end  # nothing of the old run, its partial step 4 included
    assert sorted(kept["step"].unique().to_list()) == list(range(4, 11))


def test_a_long_pause_inside_a_step_is_not_a_restart():
    """A rank silent for a while in the middle of a step (not starting the step over) stays one run."""
    trace = slow_worker_job("job1", steps=8)
    pause_at = float(trace.filter((pl.col("rank") == 5) & (pl.col("step") == 4))["start_s"].sort()[3])
    later = (pl.col("rank") == 5) & (pl.col("start_s") >= pause_at)
    paused = trace.with_columns(pl.when(later).then(pl.col("start_s") + 20.0).otherwise(pl.col("start_s")))
    kept = complete_steps(as_step_ops(paused))
    assert kept["start_s"].min() == paused["start_s"].min()  # the first steps are still in
