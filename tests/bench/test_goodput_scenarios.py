"""The goodput scenarios and a relaunched job run end to end (twin -> real samplers -> store -> C4D)."""

from __future__ import annotations

import pytest

from c4.bench.diagnose_run import make_twin, run_scenario
from c4.bench.diagnose_scenarios import Scenario
from c4.bench.goodput import _CollectorPasses, score_jobs, summarize
from c4.bench.goodput_scenarios import CHECKPOINT_EVERY_STEPS, goodput_scenarios
from c4.catalogue import load
from c4.collector.store import Store
from c4.sim.goodput_truth import PARTS
from c4.sim.twin import Fault


def test_goodput_library_truths():
    """Every scenario checkpoints and runs 3-5 minutes; the truth has the losses its faults should cause."""
    scs = goodput_scenarios(seed=0)
    assert len({s.name for s in scs}) == 5
    lost = {}
    for sc in scs:
        assert 180 <= sc.onset_s + sc.watch_s <= 300
        assert all(j["checkpoint_every_steps"] == CHECKPOINT_EVERY_STEPS for j in sc.jobs)
        twin = make_twin(sc)
        truth = twin.accounting_truth(sc.onset_s + sc.watch_s)
        for acct in truth.values():
            assert sum(acct[p] for p in PARTS) == pytest.approx(acct["lost_s"], abs=1e-6)
        lost[sc.name.rsplit("-", 1)[0]] = {
            job: {p: round(a[p], 6) for p in PARTS if a[p] > 1e-6} for job, a in truth.items()
        }
    assert set(lost["goodput-hang-restart"]["train-a"]) == {"hung_s", "restarting_s", "redone_s"}
    assert set(lost["goodput-hang-unattended"]["train-b"]) == {"hung_s"}
    assert set(lost["goodput-slow-restart"]["train-b"]) == {"slowed_s", "restarting_s", "redone_s"}
    assert set(lost["goodput-planned-restart"]["train-a"]) == {"restarting_s", "redone_s"}
    assert lost["goodput-healthy"] == {"train-a": {}, "train-b": {}}
    # the job without a fault loses nothing in any scenario
    assert lost["goodput-hang-restart"]["train-b"] == lost["goodput-slow-restart"]["train-a"] == {}


def test_a_relaunched_job_through_the_samplers_store_and_diagnosis(tmp_path):
    """A hang killed after 5 s and relaunched 5 s later: C4D finds the hang first, the samplers read both
    runs, and the store places every rank of the new run's communicators on its GPU (the agent learned the
    new comm ids from the appended init lines), whose Inspector sequence numbers begin at 0. The relaunch starts the hung step over under its number: no host stall is
    read into the restart gap (it was, as cpu_stall on the restarted job's hosts)."""
    job = {
        "tp": 8,
        "pp": 2,
        "microbatches": 4,
        "checkpoint_every_steps": 4,
        "restart_after_s": 5,
        "restart_s": 5,
    }
    sc = Scenario(
        "relaunch",
        "job_hang",
        1,
        4,
        faults=[Fault("rank_hang", 8, node="host1", gpu=4)],
        onset_s=8,
        watch_s=30,
        jobs=[{"name": "p", "first_node": 0, **job}, {"name": "q", "first_node": 2, **job}],
    )
    passes = _CollectorPasses(interval_s=10.0)
    r = run_scenario(sc, tmp_path, on_pass=passes.on_pass, on_end=passes.on_end)
    assert r.ttd_s is not None and r.correct[0] and r.raised[0]["class"] == "non_comm_hang", (
        r.raised,
        r.truth,
    )
    assert [f["class"] for f in r.raised] == ["non_comm_hang"], (
        r.raised,
        r.truth,
    )
    twin = make_twin(sc)
    first, second = twin.twin_jobs["p"].runs
    assert first.killed_by is sc.faults[0]
    assert second.start_s < sc.onset_s + sc.watch_s - 10  # the relaunched run ran for a while
    store = Store(tmp_path / "c4.duckdb", load())
    try:
        got = store.con.execute("SELECT comm_id, rank, node, gpu_index FROM rank_identity").fetchall()
        seqs = store.con.execute(
            "SELECT comm_id, min(coll_sn) FROM nccl_collectives GROUP BY comm_id"
        ).fetchall()
    finally:
        store.close()
    placed = {(c, k): (n, g) for c, k, n, g in got}
    spec = twin.job_specs["p"]
    for rank in range(spec.world):
        host, local = spec.host_of(rank)
        for comm, crank, _ in twin.communicators("p", rank):
            assert placed[(twin.comm_id("p", comm, 1), crank)] == (host, local)
    new = {twin.comm_id("p", c, 1) for k in range(spec.world) for c, _, _ in twin.communicators("p", k)}
    assert {c for c, lo in seqs if c in new and lo == 0} == {c for c, _ in seqs if c in new} != set()
    # c4 bench goodput's scoring on this run: the hung job's lost time as the twin counts it, the other's none
    rows = {row["job"]: row for row in score_jobs(sc.name, r.extra)}
    assert rows["p"]["scored"] and rows["p"]["accounting_error"] <= 0.05, rows["p"]
    assert not rows["q"]["scored"] and rows["q"]["ettr_error"] <= 0.02, rows["q"]
    summary = summarize(list(rows.values()))
    assert summary["jobs_scored"] == 1 and summary["jobs_unaccounted"] == 0


def test_a_job_the_collector_never_accounted_scores_as_wholly_wrong():
    """A job with true losses and no job_goodput row counts as error 1.0 and as unaccounted; a job that lost
    under 1% of its wall time is scored by ETTR only."""
    truth = {
        "a": {"lost_s": 50.0, "wall_s": 200.0, "ettr": 0.75, "hung_s": 50.0},
        "b": {"lost_s": 1.0, "wall_s": 200.0, "ettr": 0.995},
    }
    measured = {"b": {"lost_s": 0.0, "ettr": 1.0}}
    rows = score_jobs("s", {"measured": measured, "truth": truth})
    by = {r["job"]: r for r in rows}
    assert by["a"]["accounting_error"] == 1.0 and by["a"]["measured_lost_s"] is None
    assert by["b"]["scored"] is False and by["b"]["accounting_error"] is None
    assert by["b"]["ettr_error"] == 0.005
    s = summarize(rows)
    assert s["jobs_unaccounted"] == 1 and s["accounting_error"] == {"median": 1.0, "max": 1.0}
