"""`c4 bench rollup` runs end to end at a tiny size: both NVLink rollup paths on real sampler rows give the
same rows, every raw row counted (speed is not asserted)."""

import subprocess

import duckdb
from testkit.procs import C4, run_bench_json


def test_bench_rollup_reports_both_paths_and_the_alternatives(tmp_path):
    out, result = run_bench_json(
        ["rollup", "--nodes", "2", "--minutes", "1", "--repeat", "1", "--alternatives", "--json"]
        + ["--workdir", str(tmp_path)],
        timeout_s=240,
    )
    nv = result["tables"]["nvlink_samples"]
    assert nv["same_rows"] is True
    assert nv["raw_rows"] == 2 * 8 * 18 * 60  # 2 nodes x 8 GPUs x 18 links, one minute at 1 Hz
    assert nv["offered_rows_per_s_at_1000_nodes"] == 144_000
    assert nv["wide_rows_per_s"] > 0 and nv["view_rows_per_s"] > 0
    assert result["tables"]["gpu_samples"]["raw_rows"] == 2 * 8 * 60
    first = result["tables"]["gpu_samples"]["first_pass"]  # one table vs in chunks, fresh processes
    assert first["same_rollup_rows"] is True
    assert first["one_table"]["rollup_rows"] == first["chunked"]["rollup_rows"] == 2 * 8  # a row per GPU
    assert first["one_table"]["wall_s"] > 0 and first["chunked"]["wall_s"] > 0
    alt = result["alternatives"]
    # the minute and, of its rate look-back, each GPU's last row and the rows carrying error counters there
    assert nv["raw_rows"] + 2 * 8 * 18 <= alt["per_link_samples"] < 2 * nv["raw_rows"]
    cut = result["tables"]["lookback_cut"]
    assert cut["gpu_samples"]["same_rows"] is True and cut["nvlink_samples_wide"]["same_rows"] is True
    # gpu_samples: the minute and the minute before it, or of that minute each GPU's last row
    assert (cut["gpu_samples"]["rows_read_whole"], cut["gpu_samples"]["rows_read_cut"]) == (
        2 * 8 * 120,
        2 * 8 * 61,
    )
    wide = cut["nvlink_samples_wide"]
    assert 2 * 8 * 61 <= wide["rows_read_cut"] < wide["rows_read_whole"]
    assert "look-back cut, gpu_samples" in out
    assert alt["stats_samples"] == nv["raw_rows"]
    assert "nvlink_samples, wide rows" in out and "per-element view" in out
    chunks = result["tables"]["nvlink_chunks"]  # the wide path in chunks of 20,000 rows and of 5,000
    assert chunks["same_rows"] is True and chunks["rows_before"] > chunks["rows_now"]
    assert "NVLink wide rows in chunks of 20,000 (before)" in out
    matrices = result["tables"]["nvlink_matrices"]  # flattened to per-link samples vs rows x links matrices
    assert matrices["same_rows"] is True and matrices["rollup_rows"] == 2 * 8 * 18  # a row per link
    assert "as rows x links matrices (now)" in out
    # the same timing on the store kept, as on a load run's: its fullest minute, read-only
    out, kept = run_bench_json(
        ["rollup", "--store", str(tmp_path / "c4.duckdb"), "--repeat", "1", "--json"], timeout_s=120
    )
    assert kept["same_rows"] is True and kept["gpus"] == 2 * 8 and kept["rollup_rows"] == 2 * 8 * 18
    assert kept["raw_rows"] == nv["raw_rows"] and "flattened to per-link samples (before)" in out


def test_bench_rollup_refuses_bad_arguments(tmp_path):
    out = subprocess.run(C4 + ["bench", "rollup", "--nodes", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--nodes" in out.stderr
    out = subprocess.run(
        C4 + ["bench", "rollup", "--store", "/nonexistent/c4.duckdb"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "/nonexistent/c4.duckdb: no such file" in out.stderr

    garbage = tmp_path / "not-a-store.duckdb"
    garbage.write_bytes(b"this is no DuckDB file\n" * 100)
    out = subprocess.run(
        C4 + ["bench", "rollup", "--store", str(garbage)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "not-a-store.duckdb" in out.stderr and "Traceback" not in out.stderr
    empty = tmp_path / "empty.duckdb"
    con = duckdb.connect(str(empty))
    con.execute(
        "CREATE TABLE nvlink_gpu_samples (ts TIMESTAMP, node VARCHAR, gpu_index INTEGER, link INTEGER[])"
    )
    con.close()
    out = subprocess.run(
        C4 + ["bench", "rollup", "--store", str(empty)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and f"--store {empty}: no nvlink_gpu_samples rows to roll up" in out.stderr
