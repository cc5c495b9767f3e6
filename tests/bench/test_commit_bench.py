"""`c4 bench commit` commits the same groups both ways at a tiny size and both store every row."""

import subprocess

import pytest
from testkit.procs import C4, run_bench_json


def test_bench_commit_stores_every_row_both_ways_and_reports_cpu_per_commit():
    out, result = run_bench_json(
        ["commit", "--agents-per-commit", "2,5", "--commits", "3", "--rounds", "1", "--json"], timeout_s=180
    )
    assert [s["agents_per_commit"] for s in result["sizes"]] == [2, 5]
    for size in result["sizes"]:
        expected = 3 * size["rows_per_commit"]  # every commit's rows, once
        assert size["rows_stored"] == {"by_position": [expected], "by_name": [expected]}
        assert size["cpu_ms_per_commit_by_position"] > 0 and size["cpu_ms_per_commit_by_name"] > 0
        assert size["by_name_over_by_position"] > 0
    assert result["sizes"][1]["rows_per_commit"] * 2 == result["sizes"][0]["rows_per_commit"] * 5
    assert "by position ms" in out


@pytest.mark.parametrize(
    "bad", [["--agents-per-commit", "0"], ["--agents-per-commit", "x"], ["--commits", "0"], ["--rounds", "0"]]
)
def test_bench_commit_refuses_bad_sizes_by_name(bad):
    out = subprocess.run(C4 + ["bench", "commit", *bad], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "c4 bench commit:" in out.stderr and "Traceback" not in out.stderr
