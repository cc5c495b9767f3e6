"""`c4 bench ui` on a small store: a table, then one JSON line with every page's seconds (no timing asserted)."""

import json
import subprocess

from testkit.procs import C4


def test_bench_ui_times_every_page(tmp_path):
    out = subprocess.run(
        C4
        + [
            "bench",
            "ui",
            "--nodes",
            "8",
            "--minutes",
            "2",
            "--repeat",
            "1",
            "--workdir",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result["pages"]) == {
        "overview",
        "faults",
        "goodput",
        "bandwidth",
        "collectives",
        "traffic",
        "sql",
    }
    assert result["slowest_s"] == max(result["pages"].values())
    assert result["rows"] > 8 * 8 * 120 * 2  # GPUs and ports at 1 Hz, plus collectives and connections
    assert "slowest page:" in out.stdout
