"""`c4 bench ingest` runs end to end at a tiny size and reports its keys (speed is not asserted)."""

import json
import subprocess

from testkit.procs import C4


def test_bench_ingest_reports_json():
    out = subprocess.run(
        C4
        + [
            "bench",
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
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert {"e2e_rows_per_s", "ceiling_rows_per_s", "ratio", "streams"} <= set(result)
    assert result["streams"] == 2 and result["rows"] == 40000
    assert result["e2e_rows_per_s"] > 0
    assert abs(result["ratio"] - result["e2e_rows_per_s"] / result["ceiling_rows_per_s"]) < 0.01
