"""`c4 bench checks` runs both ways at a tiny size and both store every row (speed is not asserted)."""

import subprocess

import pytest
from testkit.procs import C4, run_bench_json


def test_bench_checks_stores_the_same_rows_both_ways_and_reports_per_node_tick(tmp_path):
    out, result = run_bench_json(
        ["checks", "--agents", "4", "--rounds", "1", "--ticks-per-batch", "1,2", "--group", "10", "--json"],
        timeout_s=180,
        env={"TMPDIR": str(tmp_path)},
    )
    assert not list(tmp_path.glob("c4-bench-checks-*"))  # its temporary stores are gone
    assert [c["ticks_per_batch"] for c in result["cases"]] == [1, 2]
    for case in result["cases"]:
        assert case["rows_stored"]["alone"] == case["rows_stored"]["together"] > 0
        for mode in ("alone", "together"):
            figures = case[mode]
            assert figures["total_us_per_node_tick"] > 0
            parts = figures["admission_us_per_node_tick"] + figures["commit_us_per_node_tick"]
            assert abs(figures["total_us_per_node_tick"] - parts) < 0.2
        assert case["together_vs_alone"] > 0
    assert result["cases"][1]["rows_stored"]["alone"] == 2 * result["cases"][0]["rows_stored"]["alone"]
    assert "together / alone" in out


def test_bench_checks_hostile_stores_the_same_rows_with_and_without_the_memory_of_refused_agents():
    out, result = run_bench_json(
        [
            "checks",
            "--agents",
            "4",
            "--rounds",
            "1",
            "--ticks-per-batch",
            "1",
            "--group",
            "10",
            "--hostile",
            "--json",
        ],
        timeout_s=180,
    )
    (case,) = result["cases"]
    hostile = case["hostile"]
    # the liar's batches are refused both ways; every other row is stored, as without a liar
    assert hostile["rows_stored"]["apart"] == hostile["rows_stored"]["all"] == case["rows_stored"]["together"]
    assert hostile["apart_commit_us_per_node_tick"] > 0 and hostile["all_vs_apart"] > 0
    assert "hostile agent in every group" in out


@pytest.mark.parametrize(
    "bad",
    [
        ["--agents", "0"],
        ["--group", "0"],
        ["--rounds", "0"],
        ["--ticks-per-batch", "x"],
        ["--ticks-per-batch", "1,0"],
    ],
)
def test_bench_checks_refuses_bad_sizes_by_name(bad):
    out = subprocess.run(C4 + ["bench", "checks", *bad], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "c4 bench checks:" in out.stderr and "Traceback" not in out.stderr
