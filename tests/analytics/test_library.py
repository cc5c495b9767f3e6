"""Every fault kind of the twin's scenario library is localized end to end, and the negatives raise nothing.

Each case runs the digital twin through the production samplers, the collector's validation and store,
and the in-collector diagnosis runner (what `c4 bench diagnose` scores), on an 8-node cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from c4.bench.diagnose import score
from c4.bench.diagnose_run import run_scenario
from c4.bench.diagnose_scenarios import JOB_KINDS, NEGATIVE_KINDS, POSITIVE_KINDS, draw, library


@pytest.mark.parametrize("kind", [k for k in POSITIVE_KINDS if k not in JOB_KINDS])  # jobs: below
def test_each_fault_kind_is_localized(tmp_path, kind):
    sc = draw(kind, seed=3, nodes=8)
    r = run_scenario(sc, tmp_path)
    assert r.ttd_s is not None, f"{kind} not localized to {r.truth['component']}: raised {r.raised}"
    assert all(r.correct), f"{kind}: a fault raised elsewhere: {r.raised} (truth {r.truth['component']})"
    for x in r.raised:  # dated from its signal: not before the fault began (one sample), not after detection
        assert x["onset_error_s"] is None or -1.5 < x["onset_error_s"] <= x["at_s"] - sc.onset_s + 1e-3, (
            kind,
            x,
        )


@pytest.mark.parametrize("kind", [k for k in JOB_KINDS if k != "job_hang"])
def test_job_causes_blame_no_victim_and_state_their_cost(tmp_path, kind):
    """Two 3D-parallel jobs, a cause in one: found, no rank that only waited is blamed, the cost is right."""
    r = run_scenario(draw(kind, seed=4, nodes=8), tmp_path)
    assert r.ttd_s is not None, f"{kind}: not found: raised {r.raised} (truth {r.truth})"
    assert r.victims_blamed == 0, (kind, r.raised, r.truth["affected"])
    assert all(r.correct), (kind, r.raised)
    assert r.slowdown_error is not None and r.slowdown_error <= 0.1, (kind, r.slowdown_error, r.truth)


def test_a_slow_pipeline_link_without_a_step_trace_blames_no_victim(tmp_path):
    """The common case: the job exports no step trace, C4D has NCCL Inspector's default records alone.
    The slow link is found, named by the GPUs at its ends, and none of its ends' TP peers is blamed."""
    sc = draw("job_slow_comm", seed=4, nodes=8)
    sc.cluster = {**sc.cluster, "step_trace": False}
    r = run_scenario(sc, tmp_path)
    assert r.ttd_s is not None, f"not found: raised {r.raised} (truth {r.truth})"
    assert r.victims_blamed == 0 and all(r.correct), (r.raised, r.truth["affected"])
    assert [x["fault_id"].split(":")[0] for x in r.raised] == ["p2p_link"]


def test_hang_in_one_of_two_jobs_is_localized_while_the_other_runs(tmp_path):
    sc = draw("job_hang", seed=4, nodes=8)
    r = run_scenario(sc, tmp_path)
    assert r.truth["job"] in ("train-a", "train-b")
    assert r.ttd_s is not None and all(r.correct), (r.raised, r.truth)


@pytest.mark.parametrize("kind", ["spine_link_degraded", "rank_hang", "healthy"])
def test_agents_that_flush_every_5_s_are_diagnosed_5_s_behind_the_clock(tmp_path, kind):
    """Nodes deliver their rows every 5 s, each at its own phase (agents with flush_interval_s = 5):
    C4D looking 5 s behind the clock (diagnose_delivery_lag_s) localizes as with every tick delivered,
    blames nothing that is not at fault, and raises nothing on a healthy cluster. Looking at the clock
    itself, with nodes delivering every 5 ticks (host1 a tick ahead of the others), it blamed two NIC
    ports of host1 for the degraded spine link before it found the link (c4 bench diagnose, README)."""
    sc = draw(kind, seed=0, nodes=16)
    sc.watch_s = 15.0
    r = run_scenario(sc, tmp_path, flush_s=5.0)
    if sc.negative:
        assert r.raised == []
        return
    assert r.ttd_s is not None and all(r.correct), (kind, r.raised, r.truth["component"])
    assert r.victims_blamed == 0


@pytest.mark.parametrize("kind", NEGATIVE_KINDS)
def test_negative_scenarios_raise_nothing(tmp_path, kind):
    r = run_scenario(draw(kind, seed=3, nodes=8), tmp_path)
    assert r.raised == []


def test_library_is_seeded_and_covers_every_kind():
    a, b = library(2, 1, 32, seed=5), library(2, 1, 32, seed=5)
    assert [(s.name, s.faults) for s in a] == [(s.name, s.faults) for s in b]
    assert {s.kind for s in a} == set(POSITIVE_KINDS) | set(NEGATIVE_KINDS)
    assert len(library(6, 5, 32)) >= 100


def test_scoring_counts_wrong_components_and_negatives():
    from c4.bench.diagnose_run import ScenarioResult

    hit = ScenarioResult(
        "a", "xid48", False, {"component": "host1/gpu2"}, [{}], [True], ttd_s=1.0, onset_errors_s=[-3.0]
    )
    wrong = ScenarioResult("b", "xid48", False, {"component": "host3/gpu0"}, [{}], [False])
    noisy = ScenarioResult("c", "healthy", True, {}, [{}], [False])
    rows, summary = score([hit, wrong, noisy])
    assert summary["precision"] == pytest.approx(1 / 3)
    assert summary["recall"] == 0.5 and summary["false_alarms"] == 1
    assert summary["per_kind"]["xid48"] == {
        "precision": 0.5,
        "recall": 0.5,
        "ttd_p50_s": 1.0,
        "ttd_p90_s": 1.0,
    }
    assert summary["onset_error_max_s"] == 3.0 and rows[0]["onset_err_max_s"] == 3.0  # early counts too


def test_job_kinds_need_their_class_on_the_right_place():
    from c4.bench.diagnose_run import is_correct
    from c4.bench.diagnose_scenarios import JOB_CLASSES

    assert set(JOB_CLASSES) == set(JOB_KINDS)
    truth = {"component": "train-a", "job": "train-a", "blamed": "", "affected": ""}
    right = {"fault_class": "data_imbalance", "component": "train-a"}
    assert is_correct(right, truth, "job_data_imbalance")
    # the replica that drew the long batches, called a slow worker: wrong even where the truth points
    for wrong in (
        {"fault_class": "slow_worker", "component": "train-a"},
        {"fault_class": "slow_worker", "component": "host1/gpu0"},
    ):
        assert not is_correct(wrong, truth, "job_data_imbalance")
    gpu = {"component": "host1/gpu2", "job": "train-a", "blamed": "train-a/rank10", "affected": ""}
    assert is_correct({"fault_class": "non_comm_slow", "component": "host1/gpu2"}, gpu, "job_slow_worker")
    assert not is_correct({"fault_class": "cpu_stall", "component": "host1/gpu2"}, gpu, "job_slow_worker")
    assert not is_correct({"fault_class": "slow_worker", "component": "host1/gpu2"}, gpu, "job_hang")


def test_bench_diagnose_json_line():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "c4.cli",
            "bench",
            "diagnose",
            "--quick",
            "--nodes",
            "8",
            "--kinds",
            "nic_degraded,healthy",
            "--ranks",
            "2000",
            "--jobs",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    last = json.loads(out.stdout.strip().splitlines()[-1])
    for key in (
        "scenarios",
        "precision",
        "recall",
        "false_alarms",
        "ttd_p50_s",
        "ttd_p90_s",
        "onset_error_p50_s",
        "onset_error_max_s",
        "victims_blamed",
        "slowdown_error",
        "analysis_10k_ranks_s",
        "per_kind",
    ):
        assert key in last, key
    assert last["scenarios"] == 2 and last["recall"] == 1.0 and last["false_alarms"] == 0
    assert last["analysis_found_injected"] is True
    bad = subprocess.run(
        [sys.executable, "-m", "c4.cli", "bench", "diagnose", "--kinds", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "unknown: nope" in bad.stderr
