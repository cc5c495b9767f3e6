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
            "--week-nodes",
            "8",
            "--week-days",
            "1",
            "--week-raw-minutes",
            "2",
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
    week = result["week"]  # the week-long case over rollups, here 8 nodes and a day
    assert (
        week["nodes"] == 8 and week["rows"] > 8 * 8 * 24 * 60 * 2
    )  # a day of GPU and port minutes, at least
    # the collector's rollup compute is timed on raw GPU, port, collective and connection rows (of the 2 raw
    # minutes, here)
    assert set(week["rollup"]["tables"]) == {
        "gpu_samples",
        "ib_port_samples",
        "nccl_collectives",
        "nccl_connections",
    }
    assert 0 < week["rollup"]["raw_rows"] <= 8 * 8 * 120 * 4
    for window in ("window_7d", "window_1d"):
        assert set(week[window]["pages"]) == set(result["pages"])
        assert week[window]["slowest_s"] == max(week[window]["pages"].values())
    assert week["slowest_s"] == max(week["window_7d"]["slowest_s"], week["window_1d"]["slowest_s"])
