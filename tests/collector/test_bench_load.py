"""`c4 bench load` runs end to end at a tiny size, on one collector and on lake shards: every batch
acknowledged once, stored once (speed is not asserted)."""

import os
import subprocess

import pytest
from testkit.procs import C4, run_bench_json


@pytest.fixture
def world_tmp():
    """A temporary directory others may use as /tmp (the bench's PostgreSQL runs as its own user, and
    pytest's own directories are private)."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="c4-test-tmp-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_bench_load_reports_json_and_loses_nothing(world_tmp):
    tmp_path = world_tmp
    out, result = run_bench_json(
        ["load", "--agents", "6", "--compare-agents", "3", "--duration-s", "3", "--ramp-s", "1"]
        + ["--json", "--ingest-processes", "2", "--store-threads", "1", "--shards", "2"]
        # each lake collector on a CPU of its own, as the shard-speedup figure is measured
        + (["--cpus-per-collector", "1"] if len(os.sched_getaffinity(0)) >= 2 else []),
        timeout_s=240,
        env={"TMPDIR": str(tmp_path)},
    )
    assert not list(tmp_path.glob("c4-bench-load-*"))  # its temporary stores are gone
    assert {"agents", "rows_per_s", "ack_p50_s", "ack_p99_s", "lost", "refused", "shard_speedup"} <= set(
        result
    )
    assert result["agents"] == 6 and result["agents_connected"] == 6
    assert result["rows_per_node_tick"] > 30  # 8 GPUs (NVLinks in a wide row each), 8 NIC ports, host
    assert result["batches_made"] == result["batches_acked"] > 0 and result["spooled_at_end"] == 0
    assert (
        result["lost"] == 0
        and result["duplicated"] == 0
        and result["refused"] == 0
        and result["unacked"] == 0
    )
    assert result["rows_per_s"] > 0 and 0 < result["ack_p50_s"] <= result["ack_p99_s"]
    assert result["offered_rows_per_s"] == round(6 * result["rows_per_node_tick"])
    # what the generator made in the window: whole ticks of 6 nodes, and how late its ticks ran
    assert result["made_rows_per_s"] > 0 and result["generator_max_tick_lag_s"] >= 0
    # the compared agent count ran first, in the same run, with its own figures
    compare = result["compare"]
    assert compare["agents"] == 3 and compare["offered_rows_per_s"] == round(3 * result["rows_per_node_tick"])
    assert compare["batches_made"] == compare["batches_acked"] > 0 and compare["lost"] == 0
    # the same agents against one lake shard and two (a real PostgreSQL catalog): nothing lost there either
    assert [(r["setup"], r["agents"]) for r in result["setups"]] == [
        ("1 collector", 3),
        ("1 collector", 6),
        ("1 collector + 2 ingest processes", 6),
        ("1 lake shard", 6),
        ("2 lake shards", 6),
    ]
    for r in result["setups"]:
        assert r["lost"] == r["duplicated"] == r["refused"] == r["unacked"] == 0, r
        assert r["agents_connected"] == r["agents"] and r["rows_per_s"] > 0
        assert 0 <= r["collector_kernel_cpu_cores"] <= r["collector_cpu_cores"], r
    for r in result["setups"][:2]:  # one collector: its writer's commits and busy share over the window
        assert r["commits_per_s"] > 0 and 0 < r["writer_busy_share"] < 1, r
    assert result["setups"][4]["collectors"] == 2 and result["shard_speedup"] > 0
    assert "1 collector" in out and "2 lake shards" in out


def test_bench_load_refuses_more_pinned_cpus_than_the_machine_has():
    out = subprocess.run(
        C4 + ["bench", "load", "--agents", "2", "--shards", "2", "--cpus-per-collector", "4096"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "needs 8192 CPUs" in out.stderr


def test_bench_load_baseline_c4_runs_beside_this_collector(tmp_path):
    """--baseline-c4 runs the same agents against another c4 executable's collector, in the same run; with
    --rounds 2 the pair runs again in the other order, and each setup's figures are given per round."""
    out, result = run_bench_json(
        ["load", "--agents", "3", "--compare-agents", "0", "--duration-s", "2", "--ramp-s", "0.5"]
        + ["--json", "--baseline-c4", str(_c4_script(tmp_path)), "--rounds", "2"],
        timeout_s=300,
    )
    assert result["compare"] is None
    assert [(r["setup"], r["agents"], r["round"]) for r in result["setups"]] == [
        ("1 collector", 3, 1),
        ("1 collector (baseline c4)", 3, 1),
        ("1 collector (baseline c4)", 3, 2),
        ("1 collector", 3, 2),
    ]
    for r in result["setups"]:
        assert r["batches_made"] == r["batches_acked"] > 0 and r["lost"] == r["duplicated"] == 0, r
        assert r["made_rows_per_s"] > 0 and r["offered_rows_per_s"] > 0
    rounds = result["rounds"]
    by_run = {(r["setup"], r["round"]): r for r in result["setups"]}
    assert rounds["this_ack_p99_s"] == [by_run[("1 collector", n)]["ack_p99_s"] for n in (1, 2)]
    assert rounds["baseline_ack_p99_s"] == [
        by_run[("1 collector (baseline c4)", n)]["ack_p99_s"] for n in (1, 2)
    ]
    assert min(rounds["this_ack_p99_s"]) <= rounds["this_ack_p99_s_median"] <= max(rounds["this_ack_p99_s"])
    assert rounds["this_first_in_rounds"] == [1]
    assert "1 collector (baseline c4), round 2" in out
    assert f"rounds_this_ack_p99_s_median: {rounds['this_ack_p99_s_median']:.4g}" in out


def _c4_script(tmp_path):
    """An executable running this checkout's c4 (C4 is an interpreter command line)."""
    script = tmp_path / "c4"
    script.write_text("#!/bin/sh\nexec " + " ".join(C4) + ' "$@"\n')
    script.chmod(0o755)
    return script


def test_bench_load_refuses_a_baseline_that_is_not_executable(tmp_path):
    out = subprocess.run(
        C4 + ["bench", "load", "--agents", "2", "--baseline-c4", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "is not an executable file" in out.stderr
    for rounds in (["--rounds", "0"], ["--rounds", "2"]):  # none, or rounds with nothing to alternate with
        out = subprocess.run(
            C4 + ["bench", "load", "--agents", "2", *rounds], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 2 and "--rounds" in out.stderr


def test_bench_load_ticks_per_batch_sends_the_same_rows_in_fewer_batches():
    """--ticks-per-batch N: each agent's batch per table carries N ticks (an agent flushing every N s),
    the rows offered per second are the same, every row is stored once."""
    _, one = run_bench_json(
        ["load", "--agents", "3", "--compare-agents", "0", "--duration-s", "4", "--ramp-s", "0.5", "--json"],
        timeout_s=180,
    )
    _, three = run_bench_json(
        ["load", "--agents", "3", "--compare-agents", "0", "--duration-s", "4", "--ramp-s", "0.5", "--json"]
        + ["--ticks-per-batch", "3"],
        timeout_s=180,
    )
    assert three["ticks_per_batch"] == 3 and one["ticks_per_batch"] == 1
    assert three["rows_per_node_tick"] == one["rows_per_node_tick"]
    assert three["offered_rows_per_s"] == one["offered_rows_per_s"] == round(3 * one["rows_per_node_tick"])
    assert three["batches_made"] == three["batches_acked"] > 0
    assert three["lost"] == three["duplicated"] == three["refused"] == three["unacked"] == 0
    # about a third of the batches for the same seconds (each agent's first batch comes at once)
    assert three["batches_made"] * 2 < one["batches_made"]


def test_bench_load_refuses_zero_ticks_per_batch():
    out = subprocess.run(
        C4 + ["bench", "load", "--agents", "2", "--ticks-per-batch", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--ticks-per-batch >= 1" in out.stderr


def test_the_generator_sends_health_rows_as_often_as_a_default_agent():
    """agent_health and agent_sampler_health every health_interval_s (the agent's default), not every tick."""
    from c4.bench.load import HEALTH_TABLES, default_health_interval_s
    from c4.client_config import AgentConfig

    assert default_health_interval_s() == AgentConfig(node="n").health_interval_s > 1
    assert HEALTH_TABLES == {"agent_health", "agent_sampler_health"}


def test_the_stored_rows_move_in_time_unless_frozen(tmp_path):
    """What the collector stores from the generator: each tick's rows at that tick's time and byte counters
    climbing; with --frozen-rows, one sampled tick repeated (one time per node, one counter value)."""
    import duckdb

    def stored(flag: list[str]) -> tuple[int, int]:
        work = tmp_path / ("frozen" if flag else "moving")
        run_bench_json(
            ["load", "--agents", "2", "--compare-agents", "0", "--duration-s", "4", "--ramp-s", "0.5"]
            + ["--json", "--workdir", str(work), *flag],
            timeout_s=180,
        )
        con = duckdb.connect(str(work / "collector" / "c4.duckdb"), read_only=True)
        try:
            return con.execute(
                "SELECT min(times), min(values) FROM (SELECT count(DISTINCT ts) AS times, "
                "count(DISTINCT tx_bytes) AS values FROM ib_port_samples GROUP BY node, device, port)"
            ).fetchone()
        finally:
            con.close()

    times, values = stored([])
    assert times >= 4 and values == times  # per port: a time per tick, and its counter moved at each
    assert stored(["--frozen-rows"]) == (1, 1)
