"""`c4 bench ingest` runs end to end at a tiny size and reports its keys (speed is not asserted)."""

from testkit.procs import run_bench_json


def test_bench_ingest_reports_json():
    out, result = run_bench_json(
        [
            "ingest",
            "--rows",
            "40000",
            "--streams",
            "2",
            "--batch-rows",
            "5000",
            "--rounds",
            "1",
            "--json",
        ],
        timeout_s=180,
    )
    assert {"e2e_rows_per_s", "ceiling_rows_per_s", "ratio", "streams"} <= set(result)
    assert result["streams"] == 2 and result["rows"] == 40000
    assert result["e2e_rows_per_s"] > 0
    assert abs(result["ratio"] - result["e2e_rows_per_s"] / result["ceiling_rows_per_s"]) < 0.01
