"""`c4 bench load` runs end to end at a tiny size, on one collector and on lake shards: every batch
acknowledged once, stored once (speed is not asserted)."""

import json
import os
import subprocess

from testkit.procs import C4


def test_bench_load_reports_json_and_loses_nothing():
    out = subprocess.run(
        C4
        + ["bench", "load", "--agents", "6", "--duration-s", "3", "--ramp-s", "1", "--json"]
        + ["--ingest-processes", "2", "--store-threads", "1"]
        # each lake collector on a CPU of its own, as the shard-speedup figure is measured
        + (["--cpus-per-collector", "1"] if len(os.sched_getaffinity(0)) >= 2 else []),
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert {"agents", "rows_per_s", "ack_p50_s", "ack_p99_s", "lost", "refused", "shard_speedup"} <= set(
        result
    )
    assert result["agents"] == 6 and result["agents_connected"] == 6
    assert result["rows_per_node_tick"] > 100  # 8 GPUs, their NVLinks, 8 NIC ports, host, health
    assert result["batches_made"] == result["batches_acked"] > 0 and result["spooled_at_end"] == 0
    assert (
        result["lost"] == 0
        and result["duplicated"] == 0
        and result["refused"] == 0
        and result["unacked"] == 0
    )
    assert result["rows_per_s"] > 0 and 0 < result["ack_p50_s"] <= result["ack_p99_s"]
    # the same agents against one lake shard and two (a real PostgreSQL catalog): nothing lost there either
    assert [r["setup"] for r in result["setups"]] == [
        "1 collector",
        "1 collector + 2 ingest processes",
        "1 lake shard",
        "2 lake shards",
    ]
    for r in result["setups"]:
        assert r["lost"] == r["duplicated"] == r["refused"] == r["unacked"] == 0, r
        assert r["agents_connected"] == 6 and r["rows_per_s"] > 0
    assert result["setups"][3]["collectors"] == 2 and result["shard_speedup"] > 0
    assert "1 collector" in out and "2 lake shards" in out


def test_bench_load_refuses_more_pinned_cpus_than_the_machine_has():
    out = subprocess.run(
        C4 + ["bench", "load", "--agents", "2", "--cpus-per-collector", "4096"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "needs 8192 CPUs" in out.stderr
