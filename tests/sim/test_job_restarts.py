"""Jobs that checkpoint, get killed and relaunched on the twin: the files a relaunch leaves, and the goodput truth."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from testkit.twin import frames

from c4.agent.labels import context_from
from c4.agent.runner import build_samplers
from c4.catalogue import load
from c4.collector.store import Store
from c4.config import AgentConfig
from c4.sim.goodput_truth import PARTS
from c4.sim.jobs_twin import JobsTwin
from c4.sim.node_files import STEP_TRACE_DIR
from c4.sim.runner import SimRunner
from c4.sim.twin import Fault

EPOCH_S = 1_800_000_000.0
#: One node, TP 8, no jitter: every step takes 1.0 s exactly, 1.05 s when it ends with a checkpoint.
EXACT = {
    "name": "a",
    "tp": 8,
    "first_node": 0,
    "jitter": 0.0,
    "data_load_s": 0.05,
    "forward_s": 0.3,
    "tp_comm_s": 0.025,
    "backward_s": 0.55,
    "optimizer_s": 0.05,
    "checkpoint_every_steps": 5,
    "checkpoint_s": 0.05,
}
#: Two nodes, TP 8 x PP 2 (pipeline transfers between the nodes), jitter on, a checkpoint every 4 steps.
PIPE = {"name": "p", "tp": 8, "pp": 2, "microbatches": 4, "first_node": 0, "checkpoint_every_steps": 4}


def _exact(faults=(), horizon_s=100.0, **job) -> JobsTwin:
    return JobsTwin(
        nodes=1, leaves=1, spines=1, jobs=[{**EXACT, **job}], faults=list(faults), horizon_s=horizon_s
    )


def _parts_add_up(acct: dict) -> None:
    """lost = wall - productive = the sum of the parts = what the faults explain (a healthy run explains 0)."""
    assert acct["lost_s"] == pytest.approx(acct["wall_s"] - acct["productive_s"], abs=1e-9)
    assert sum(acct[p] for p in PARTS) == pytest.approx(acct["lost_s"], abs=1e-6)
    assert sum(f["lost_s"] for f in acct["faults"]) == pytest.approx(acct["lost_s"], abs=1e-6)


def test_a_hang_killed_after_restart_after_s_hand_checked():
    """Hang at 22 s: step 22 is the first to start after it (steps end at 1, 2, ..., 5.05, ...; step 21 at
    22.2). Steps 20-21 came after the checkpoint of step 19; the other ranks' data_load and forward of step
    22 end at 22.55, so the kill is at 52.55 and the relaunch, from step 20, at 72.55."""
    twin = _exact([Fault("rank_hang", 22, node="host0", gpu=3)], restart_after_s=30, restart_s=20)
    first, second = twin.twin_jobs["a"].runs
    assert (first.kill_s, second.start_s, second.first_step) == pytest.approx((52.55, 72.55, 20))
    assert first.killed_by.kind == "rank_hang" and first.step_end_s[-1] == pytest.approx(22.2)
    acct = twin.accounting_truth(100.0)["a"]
    # productive: steps 0-19 (20.2 s) and 27.45 s of the relaunched run; hung from 23.2 (step 22's ideal
    # end) to the kill; redone: steps 20 and 21 and the 1.0 s of step 22; 20 s restarting
    want = {
        "wall_s": 100,
        "productive_s": 47.65,
        "hung_s": 29.35,
        "redone_s": 3.0,
        "restarting_s": 20,
        "slowed_s": 0,
    }
    assert {k: acct[k] for k in want} == pytest.approx(want)
    assert acct["lost_s"] == pytest.approx(52.35) and acct["runs"] == 2
    spans = [(x["first_step"], x["start_s"], x["kill_s"], x["killed_by"]) for x in acct["run_spans"]]
    assert spans == [(0, 0.0, pytest.approx(52.55), "rank_hang"), (20, pytest.approx(72.55), None, "")]
    (hang,) = acct["faults"]
    assert hang["kind"] == "rank_hang" and hang["lost_s"] == pytest.approx(52.35)
    _parts_add_up(acct)
    # before the kill the hang is all there is; in the gap, time goes to restarting
    at_40 = twin.accounting_truth(40.0)["a"]
    assert (at_40["hung_s"], at_40["redone_s"], at_40["restarting_s"]) == pytest.approx((16.8, 0, 0))
    assert twin.accounting_truth(60.0)["a"]["restarting_s"] == pytest.approx(7.45)
    (row,) = twin.ground_truth()
    assert row["onset_s"] == pytest.approx(22.2) and row["end_s"] == pytest.approx(52.55)


def test_a_hang_without_restart_after_s_stays_hung():
    twin = _exact([Fault("rank_hang", 22, node="host0", gpu=3)])
    (run,) = twin.twin_jobs["a"].runs
    assert run.kill_s is None and run.hung
    acct = twin.accounting_truth(100.0)["a"]
    assert (acct["productive_s"], acct["hung_s"], acct["redone_s"]) == pytest.approx((23.2, 76.8, 0))
    _parts_add_up(acct)


def test_healthy_job_with_checkpoints_loses_nothing():
    """Jitter on: the ideal step has the same seed and jitter, so a healthy job has no lost time."""
    twin = JobsTwin(nodes=2, leaves=1, spines=1, seed=3, jobs=[PIPE], horizon_s=30)
    trace = twin.twin_jobs["p"].trace
    ckpt = trace.filter(pl.col("op") == "checkpoint")
    assert set(ckpt["step"]) >= {3, 7, 11, 15} and not set(ckpt["step"]) & {0, 1, 2, 4, 5, 6}
    assert ckpt.group_by("step").len()["len"].unique().to_list() == [16]  # every rank saves
    for until in (7.3, 30.0):
        acct = twin.accounting_truth(until)["p"]
        assert acct["wall_s"] == until and acct["lost_s"] == pytest.approx(0, abs=1e-9)
        assert acct["ettr"] == pytest.approx(1.0)
        _parts_add_up(acct)


def test_job_restart_fault_kills_and_relaunches_from_the_checkpoint():
    """A healthy job restarted at 33.5 s: steps 0-32 done (step 29's checkpoint ended at 30.3, step 32 at
    33.3), step 33 was 0.2 s in: redone 3 + 0.2 s, 30 s restarting (the default), nothing hung or slow."""
    twin = _exact([Fault("job_restart", 33.5, job="a")])
    first, second = twin.twin_jobs["a"].runs
    assert (first.kill_s, second.start_s, second.first_step) == pytest.approx((33.5, 63.5, 30))
    acct = twin.accounting_truth(100.0)["a"]
    want = {"hung_s": 0, "slowed_s": 0, "redone_s": 3.2, "restarting_s": 30.0}
    assert {k: acct[k] for k in want} == pytest.approx(want)
    (restart,) = acct["faults"]
    assert restart["kind"] == "job_restart" and restart["lost_s"] == pytest.approx(33.2)
    _parts_add_up(acct)
    assert twin.ground_truth()[0]["expected_class"] == "none"
    # a restart that falls while the job is relaunching does nothing
    again = _exact([Fault("job_restart", 33.5, job="a"), Fault("job_restart", 50, job="a")])
    assert [r.start_s for r in again.twin_jobs["a"].runs] == pytest.approx([0, 63.5])


def test_slow_worker_then_restart_slowed_then_gone():
    """A slow worker (compute x2: steps take 0.9 s more) from step 10 (starts at 10.1), an operator's
    restart at 40 s: steps 10-24 slowed (13.5 s) and 0.25 s of step 25 beyond its ideal 1.0 s; step 24's
    checkpoint ended at 38.75, so only step 25's 1.0 s is redone. The relaunched run, from step 25, runs at
    the ideal pace: the node was replaced."""
    twin = _exact(
        [Fault("slow_worker", 10, node="host0", gpu=2, factor=2.0), Fault("job_restart", 40, job="a")]
    )
    first, second = twin.twin_jobs["a"].runs
    assert first.step_end_s[-1] == pytest.approx(38.75) and second.first_step == 25 and not second.causes
    assert second.truth.step_s == pytest.approx(second.truth.ideal_step_s)
    acct = twin.accounting_truth(100.0)["a"]
    want = {"productive_s": 55.25, "slowed_s": 13.75, "redone_s": 1.0, "restarting_s": 30.0, "hung_s": 0}
    assert {k: acct[k] for k in want} == pytest.approx(want)
    slow, restart = acct["faults"]
    assert (slow["kind"], restart["kind"]) == ("slow_worker", "job_restart")
    assert (slow["lost_s"], slow["slowed_s"], restart["lost_s"]) == pytest.approx((13.75, 13.75, 31.0))
    _parts_add_up(acct)


@pytest.mark.parametrize(
    "job, faults, match",
    [
        ({"restart_s": -1}, [], "restart_s=-1"),
        ({"restart_after_s": "soon"}, [], "restart_after_s='soon'"),
        ({"restart_after_s": float("inf")}, [], "restart_after_s=inf"),
        ({"checkpoint_every_steps": 2.5}, [], "checkpoint_every_steps=2.5"),
        ({"checkpoint_every_steps": -1}, [], "must be >= 0"),
        ({"checkpoint_s": -0.1}, [], "must be >= 0"),
        ({}, [Fault("job_restart", 5, job="nope")], "no job 'nope'"),
    ],
)
def test_restart_and_checkpoint_keys_are_checked(job, faults, match):
    with pytest.raises(ValueError, match=match):
        _exact(faults, **job)


def test_job_restart_must_name_its_job_when_there_are_several():
    jobs = [{**EXACT, "name": "a"}, {**EXACT, "name": "b", "first_node": 1}]
    with pytest.raises(ValueError, match="say which job"):
        JobsTwin(nodes=2, leaves=1, spines=1, jobs=jobs, faults=[Fault("job_restart", 5)], horizon_s=20)
    twin = JobsTwin(
        nodes=2, leaves=1, spines=1, jobs=jobs, faults=[Fault("job_restart", 5, node="host1")], horizon_s=20
    )
    assert twin.twin_jobs["b"].runs[0].kill_s == 5 and twin.twin_jobs["a"].runs[0].kill_s is None


def _sample(tmp_path: Path, twin: JobsTwin, ticks: int):
    """Step the twin and read every node with the production samplers; returns (rows by table, samplers)."""
    runner = SimRunner(tmp_path, twin, "t", epoch_s=EPOCH_S)
    samplers = []
    for host, w in runner.writers.items():
        cfg = AgentConfig(node=host, samplers=w.sampler_config(), spool_dir=tmp_path / "spool")
        built = build_samplers(cfg, context_from(cfg, env={}))
        for s in built:
            s.probe()
        samplers += [(host, s) for s in built]
    rows: dict[str, list] = {}
    for tick in range(ticks):
        runner.step()
        for host, s in samplers:
            for table, rs in s.sampler.sample(0).items():
                rows.setdefault(table, []).extend({"tick": tick, **r, "node": host} for r in rs)
    return rows, [s.sampler for _, s in samplers]


def test_a_relaunch_leaves_what_a_real_one_does(tmp_path):
    """Hang at 9 s, killed 5 s after the last op, relaunched 6 s later from the last checkpoint: the trace
    has the gap and goes back to the checkpoint's step; the new run's communicators are new (init lines
    appended to the NCCL log, Inspector sequence numbers from 0), and the samplers read it all."""
    twin = JobsTwin(
        nodes=2,
        leaves=1,
        spines=1,
        seed=2,
        jobs=[{**PIPE, "restart_after_s": 5, "restart_s": 6}],
        faults=[Fault("rank_hang", 9, node="host1", gpu=4)],
        horizon_s=40,
    )
    first, second = twin.twin_jobs["p"].runs
    rows, samplers = _sample(tmp_path, twin, 34)
    assert all(getattr(s, "records_skipped", 0) == 0 for s in samplers)
    # the step trace: steps go back to the one after the last checkpoint, and nothing between the runs
    lines = []
    for f in sorted((tmp_path / "nodes").glob(f"*/{STEP_TRACE_DIR}/*.jsonl")):
        lines += [json.loads(x) for x in f.read_text().splitlines()]
    trace = pl.DataFrame(lines, infer_schema_length=None).with_columns(
        (pl.col("start_s") - EPOCH_S).alias("t"),
        (pl.col("start_s") + pl.col("duration_s") - EPOCH_S).alias("end"),
    )
    assert second.first_step % 4 == 0 and second.first_step < len(first.step_end_s)
    assert trace.filter(
        (pl.col("end") > first.kill_s + 1e-3) & (pl.col("t") < second.start_s - 1e-3)
    ).is_empty()
    after = trace.filter(pl.col("t") >= second.start_s - 1e-3)
    assert (
        after["step"].min() == second.first_step
        and trace.filter(pl.col("t") < first.kill_s)["step"].max() > second.first_step
    )
    # the NCCL log: the first run's init lines, then the relaunch's, with new commIds
    log = (tmp_path / "nodes" / "host0" / "nccl-logs" / "host0.log").read_text().splitlines()
    old = {twin.comm_id("p", c, 0) for r in range(8) for c, _, _ in twin.communicators("p", r)}
    new = {twin.comm_id("p", c, 1) for r in range(8) for c, _, _ in twin.communicators("p", r)}
    assert not old & new and len(log) == 2 * 8 * 3  # 8 ranks x (world, tp, pp), twice
    assert {x.rsplit("commId ", 1)[1].split()[0] for x in log[24:]} == new
    init = {r["comm_id"] for r in rows["nccl_topology"] if r.get("kind") == "init"}
    assert init >= old | new
    # Inspector: the new communicators' records begin at sequence number 0
    coll = pl.DataFrame(
        [
            {k: r[k] for k in ("node", "comm_id", "rank", "kind", "coll_sn", "tick")}
            for r in rows["nccl_collectives"]
        ]
    )
    fresh = coll.filter(pl.col("comm_id").is_in(list(new)))
    assert not fresh.is_empty() and fresh.group_by("comm_id", "rank", "kind").agg(pl.col("coll_sn").min())[
        "coll_sn"
    ].unique().to_list() == [0]
    assert fresh["tick"].min() >= int(second.start_s)
    # while the job is relaunching its GPUs idle
    gap = [r for r in rows["gpu_samples"] if first.kill_s + 1 < r["tick"] + 1 < second.start_s]
    assert gap and all(r["util_gpu_pct"] == 0 for r in gap)
    # rank identity: every rank of the new communicators placed on its GPU
    store = Store(tmp_path / "c4.duckdb", load())
    try:
        for table, df in frames(
            rows, ["nccl_topology", "gpu_samples", "gpu_processes", "nccl_collectives"]
        ).items():
            store.con.register("_rows", df.to_arrow())
            store.con.execute(f'INSERT INTO "{table}" SELECT * FROM _rows')
            store.con.unregister("_rows")
        got = store.con.execute("SELECT comm_id, rank, node, gpu_index FROM rank_identity").fetchall()
    finally:
        store.close()
    placed = {(c, r): (n, g) for c, r, n, g in got}
    for rank in range(16):
        host, local = twin.job_specs["p"].host_of(rank)
        for comm, crank, _ in twin.communicators("p", rank):
            assert placed[(twin.comm_id("p", comm, 1), crank)] == (host, local)
