"""`c4 bench lake` runs end to end at a tiny size on a real PostgreSQL catalog: every commit it counts
is in the lake (speed is not asserted)."""

import subprocess

from testkit.procs import C4, run_bench_json


def test_bench_lake_reports_json_for_one_and_n_shards():
    out, result = run_bench_json(
        [
            "lake",
            "--shards",
            "2",
            "--seconds",
            "1",
            "--batch-rows",
            "10",
            "--compare-upkeep-child",
            "1",
            "--compare-flush",
            "1",
            "--json",
        ],
        timeout_s=240,
    )
    assert result["shards"] == 2 and result["batch_rows"] == 10
    assert result["one_shard_commits_per_s"] > 0 and result["n_shards_commits_per_s"] > 0
    assert result["per_shard_ratio"] > 0 and result["pg_cpu_ms_per_commit"] >= 0
    assert "1 shard at once" in out and "2 shards at once" in out
    # the leader's file upkeep afterwards: 10-row commits were inlined in the catalog, the upkeep wrote
    # them out; the snapshots went, every row stayed (the bench fails otherwise)
    assert result["upkeep_snapshots_after"] < result["upkeep_snapshots_before"]
    assert result["upkeep_files_after"] >= 1 and result["upkeep_parquet_on_disk_after"] >= 1
    # the pass ran in a child: its wall time holds the child's start and attach beside the pass itself
    assert result["upkeep_wall_s"] >= result["upkeep_s"] > 0
    steps = result["upkeep_step_s"]  # every step of the pass timed, the orphan step included
    assert set(steps) >= {"flush_inlined_data", "merge_adjacent_files", "count_orphaned_files"}
    assert sum(steps.values()) <= result["upkeep_s"]
    assert result["quiet_pass_child_s"] > 0 and result["quiet_pass_inprocess_s"] > 0
    assert result["quiet_pass_child_ratio"] > 0
    # the same inlined rows flushed both ways (the bench fails when either flushed another count)
    assert (
        result["flush_per_table_s"] > 0 and result["flush_whole_lake_s"] > 0 and result["flush_speedup"] > 0
    )


def test_bench_lake_refuses_bad_arguments():
    out = subprocess.run(C4 + ["bench", "lake", "--shards", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--shards" in out.stderr
    out = subprocess.run(
        C4 + ["bench", "lake", "--compare-upkeep-child", "-1"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "--compare-upkeep-child" in out.stderr
    out = subprocess.run(
        C4 + ["bench", "lake", "--compare-flush", "-2"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "--compare-flush" in out.stderr
