"""`c4 bench downtime`: the model's bookkeeping, policy ordering, closed forms, the JSON schema and bad input."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from c4.bench.diagnose import score
from c4.bench.downtime_model import (
    STAGES,
    Timings,
    build_policies,
    closed_form_ettr,
    expected_lost_s,
    mean_ci95,
    simulate,
)
from c4.bench.downtime_rates import FAIL_SLOW, FAULT_CLASSES, SOURCES, interruptions_per_day_per_1000_gpus
from c4.bench.downtime_report import c4_detect, rates_per_s
from c4.cli import main

DAY_S = 86_400.0
TIMINGS = Timings(
    watchdog_s=600,
    manual_diagnosis_s=3600,
    ras_localize_s=900,
    c4_isolate_s=30,
    restart_s=600,
    checkpoint_s=3600,
    fail_slow_notice_s=24 * 3600,
    fail_slow_factor=2.0,
)
#: A diagnose result as `c4 bench diagnose --json` prints it (only the fields the bench reads).
DIAGNOSE = {
    "nodes": 16,
    "per_kind": {
        "xid79": {"precision": 1.0, "recall": 1.0, "ttd_p50_s": 0.7, "ttd_p90_s": 1.5},
        "rank_hang": {"precision": 1.0, "recall": 1.0, "ttd_p50_s": 21.0, "ttd_p90_s": 30.0},
        "job_hang": {"precision": 1.0, "recall": 0.0, "ttd_p50_s": None, "ttd_p90_s": None},
        "nic_degraded": {"precision": 1.0, "recall": 1.0, "ttd_p50_s": 12.0, "ttd_p90_s": 14.0},
    },
}
CLASSES = [*FAULT_CLASSES, FAIL_SLOW]


def policies():
    detect = c4_detect(DIAGNOSE, "p50")
    return build_policies(TIMINGS, CLASSES, {n: d["ttd_s"] for n, d in detect.items()})


def test_llama3_rates_add_up_to_table_5():
    assert sum(f.interruptions for f in FAULT_CLASSES) == 419
    assert interruptions_per_day_per_1000_gpus() == pytest.approx(419 / 54 / 16.384)
    rates = rates_per_s(16_384, 0.0)
    assert sum(rates.values()) * 54 * DAY_S == pytest.approx(419)
    assert rates_per_s(8_192, 0.0)["faulty_gpu"] == pytest.approx(rates["faulty_gpu"] / 2)  # scales with GPUs
    for f in FAULT_CLASSES:
        assert f.interruptions > 0 and all(k for k in f.c4_kinds)


@pytest.mark.parametrize("fail_slow", [0.0, 2.0])
def test_bookkeeping_downtime_plus_productive_is_wall(fail_slow):
    rates = rates_per_s(16_384, fail_slow)
    for policy in policies():
        acc = simulate(policy, rates, 30 * DAY_S, TIMINGS.checkpoint_s, TIMINGS.fail_slow_factor, seed=3)
        assert acc.running_s + sum(acc.stage_s.values()) == pytest.approx(acc.wall_s)
        assert acc.productive_s + acc.downtime_s == pytest.approx(acc.wall_s)
        assert acc.downtime_s == pytest.approx(sum(acc.stage_s.values()) + acc.lost_s + acc.slowed_s)
        assert 0 < acc.ettr < 1 and sum(acc.faults.values()) > 100
        assert (acc.slowed_s > 0) == (fail_slow > 0)


def test_zero_fault_rate_gives_ettr_one():
    rates = dict.fromkeys(rates_per_s(16_384, 0.0), 0.0)
    for policy in policies():
        acc = simulate(policy, rates, 30 * DAY_S, 3600, 2.0, seed=0)
        assert acc.ettr == 1.0 and acc.downtime_s == 0 and acc.faults == {}
        assert closed_form_ettr(policy, rates, 3600) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_c4_never_worse_than_ras_never_worse_than_default_on_the_same_faults(seed):
    rates = rates_per_s(16_384, 1.0)
    default, ras, c4 = (simulate(p, rates, 30 * DAY_S, 3600, 2.0, seed) for p in policies())
    assert c4.downtime_s <= ras.downtime_s <= default.downtime_s
    assert c4.downtime_s < default.downtime_s
    # the same fault sequence: the slower policy sees a prefix of the faster one's faults (less running time)
    assert sum(default.faults.values()) <= sum(ras.faults.values()) <= sum(c4.faults.values())


def test_policies_differ_only_where_they_should():
    default, ras, c4 = policies()
    assert default.stop_stages_s["faulty_gpu"] == {
        "detect": 600,
        "localize": 3600,
        "isolate": 0.0,
        "restart": 600,
    }
    assert ras.stop_stages_s["faulty_gpu"]["localize"] == 900
    assert c4.stop_stages_s["faulty_gpu"] == {"detect": 0.7, "localize": 0.0, "isolate": 30, "restart": 600}
    # HBM3: no xid95/xid48 in the diagnose result, so the next kind in the list (xid79) stands for it
    assert c4.stop_stages_s["gpu_hbm3_memory"]["detect"] == 0.7
    # a software bug: job_hang was not detected (recall 0), rank_hang stands for it
    assert c4.stop_stages_s["software_bug"]["detect"] == 21.0
    # silent data corruption: invisible to RAS and C4D, every policy pays the manual path
    assert c4.stop_stages_s["silent_data_corruption"] == default.stop_stages_s["silent_data_corruption"]
    # fail-slow: RAS cannot localize a slow part, C4 notices at its measured time
    assert ras.slow_notice_s == default.slow_notice_s == 24 * 3600 and c4.slow_notice_s == 12.0


def test_expected_lost_work_closed_form():
    c = 3600.0
    assert expected_lost_s(1e-9, c) == pytest.approx(c / 2, rel=1e-4)  # rare faults: uniform in the interval
    assert expected_lost_s(1 / 60, c) == pytest.approx(
        60, rel=1e-6
    )  # frequent faults: never reach a checkpoint
    # one cause, recovery free: the mean lost work per fault matches E[T mod C] for T ~ Exp(rate)
    rate = 1 / 5400
    free = build_policies(Timings(0, 0, 0, 0, 0, c, 1, 1), [FAULT_CLASSES[0]], {FAULT_CLASSES[0].name: 0.0})[
        0
    ]
    lost, faults = 0.0, 0
    for seed in range(40):
        acc = simulate(free, {FAULT_CLASSES[0].name: rate}, 30 * DAY_S, c, 1.0, seed)
        lost += acc.lost_s
        faults += acc.faults[FAULT_CLASSES[0].name]
    t = 1 / rate
    exact = t - c * math.exp(-c / t) / (1 - math.exp(-c / t))
    assert expected_lost_s(rate, c) == pytest.approx(exact)
    sd = c / math.sqrt(12)  # at most that of a uniform over the interval
    assert abs(lost / faults - exact) < 4 * sd / math.sqrt(faults)


def test_monte_carlo_agrees_with_the_closed_form():
    rates = rates_per_s(16_384, 0.0)
    for policy in policies():
        runs = [simulate(policy, rates, 30 * DAY_S, 3600, 2.0, s).ettr for s in range(60)]
        mean, lo, hi = mean_ci95(runs)
        closed = closed_form_ettr(policy, rates, 3600)
        # the closed form ignores the cut at the job's end, worth well under one point of ETTR
        assert abs(mean - closed) < max(hi - lo, 0.01)


def run_cli(argv, capsys):
    code = main(["bench", "downtime", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_schema(tmp_path, capsys):
    f = tmp_path / "diagnose.out"
    f.write_text("a table first\n" + json.dumps(DIAGNOSE) + "\n")
    code, out, _ = run_cli(["--diagnose-json", str(f), "--seeds", "5", "--days", "3", "--json"], capsys)
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert {"policies", "gpus", "days", "sources"} <= set(result)
    assert result["gpus"] == 16_384 and result["days"] == 3
    names = [p["name"] for p in result["policies"]]
    assert names[:3] == ["framework_default", "nccl_ras_flight_recorder", "c4"]
    for p in result["policies"]:
        assert {"name", "downtime_fraction", "ettr"} <= set(p)
        assert p["downtime_fraction"] + p["ettr"] == pytest.approx(1)
    published = {p["name"]: p for p in result["policies"] if p["published"]}
    assert published["c4_paper_with_c4d"]["downtime_fraction"] == 0.0116
    assert {s["key"] for s in result["sources"]} == set(SOURCES) and all(s["url"] for s in result["sources"])
    assert result["c4_time_to_detect"]["from"] == f"file {f}"
    assert result["c4_time_to_detect"]["per_class"]["faulty_gpu"] == {
        "kind": "xid79",
        "ttd_s": 0.7,
        "recall": 1.0,
    }
    assert "C4 time to detect (p50) from file" in out
    # the published 1.16% at Llama 3's 419 faults in 54 days leaves ~129 s per fault
    assert result["published_budget_per_fault_s"] == pytest.approx(0.0116 * 54 * DAY_S / 419)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gpus", "0"], "--gpus must be >= 1"),
        (["--seeds", "1"], "--seeds must be >= 2"),
        (["--checkpoint-min", "0"], "--checkpoint-min must be > 0"),
        (["--restart-min", "-1"], "argument --restart-min: -1 is negative: give 0 or more"),
        (["--fail-slow-factor", "0.5"], "--fail-slow-factor must be >= 1"),
    ],
)
def test_bad_option_is_refused_by_name(argv, message, tmp_path, capsys):
    f = tmp_path / "diagnose.out"
    f.write_text(json.dumps(DIAGNOSE))
    code, out, err = run_cli([*argv, "--diagnose-json", str(f)], capsys)
    assert code == 2 and message in err and out == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file"),
        ("no json here\n", "no JSON line"),
        ('{"precision": 1.0}\n', "no per_kind results"),
        ('{"per_kind": {"xid79": {"precision": 1.0, "recall": 1.0}}}\n', "carries no ttd_p50_s"),
        ('{"per_kind": \n', "does not parse"),
        ("{broken\n", "does not parse"),
    ],
)
def test_bad_diagnose_result_is_refused(content, message, tmp_path, capsys):
    f = tmp_path / "diagnose.out"
    if content is not None:
        f.write_text(content)
    code, _, err = run_cli(["--diagnose-json", str(f)], capsys)
    assert code == 2 and message in err


def test_simulate_refuses_nonsense():
    with pytest.raises(ValueError):
        simulate(policies()[0], {}, 0, 3600, 1.0, 0)
    assert STAGES == ("detect", "localize", "isolate", "restart")


def test_diagnose_json_carries_the_time_to_detect_this_bench_reads():
    def result(kind, ttd):
        return SimpleNamespace(
            kind=kind,
            raised=[{}],
            correct=[True],
            negative=False,
            ttd_s=ttd,
            onset_errors_s=[],
            victims_blamed=0,
            slowdown_error=None,
            sim_s=1.0,
            wall_s=1.0,
        )

    _, summary = score([result("xid79", 1.0), result("xid79", 3.0), result("rank_hang", 20.0)])
    per_kind = summary["per_kind"]
    assert per_kind["xid79"]["ttd_p50_s"] == 2.0 and per_kind["xid79"]["ttd_p90_s"] == pytest.approx(2.8)
    detect = c4_detect(summary, "p90")
    assert detect["faulty_gpu"]["ttd_s"] == pytest.approx(2.8) and detect["host_maintenance"]["ttd_s"] == 20.0


def test_without_a_file_the_quick_diagnose_runs_in_process_and_says_so(monkeypatch, capsys):
    seen = {}

    def fake_run(args):  # stands in for the minutes-long twin run; the real one prints its JSON last
        seen.update(quick=args.quick, json=args.json)
        print("the diagnose table\n" + json.dumps(DIAGNOSE))
        return 0

    monkeypatch.setattr("c4.bench.diagnose.run", fake_run)
    code, out, _ = run_cli(["--seeds", "3", "--days", "2", "--json"], capsys)
    assert code == 0 and seen == {"quick": True, "json": True}
    result = json.loads(out.strip().splitlines()[-1])
    assert result["c4_time_to_detect"]["from"] == "in-process `c4 bench diagnose --quick --json`"
    assert "the diagnose table" not in out  # its output is read, not echoed
