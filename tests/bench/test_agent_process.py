"""``c4 bench agent``'s process figures: a real agent process against a real collector, read from /proc."""

from __future__ import annotations

import os

from c4.bench.agent import build_node
from c4.bench.agent_process import cpu_s_between, measure_agent_process, proc_figures, task_cpu_ns


def test_proc_figures_read_this_process():
    """CPU seconds and resident memory of a live process; peak resident at least the current."""
    sum(i * i for i in range(200_000))  # some CPU to count
    f = proc_figures(os.getpid())
    assert f["cpu_s"] > 0 and 10 < f["rss_mib"] <= f["peak_rss_mib"]


def test_cpu_between_two_readings_counts_to_the_nanosecond_and_keeps_ended_threads():
    """A 14 ms stretch is 14 ms, not the one 10 ms tick or none /proc/PID/stat shows; a thread that ended in
    between is only in the tick counter, which then wins; this process's own threads are read by id."""
    before = {1: ("main", 1_000_000_000), 2: ("c4-sender", 500_000_000)}
    after = {1: ("main", 1_010_000_000), 2: ("c4-sender", 504_000_000), 3: ("event_engine", 0)}
    assert cpu_s_between(before, after, ticks_cpu_s=0.0) == 0.014
    assert cpu_s_between(before, {1: ("main", 1_010_000_000)}, ticks_cpu_s=0.05) == 0.05
    tasks = task_cpu_ns(os.getpid())
    assert os.getpid() in tasks and all(ns >= 0 for _, ns in tasks.values())


def test_a_real_agent_process_is_measured_while_it_sends(tmp_path):
    """The agent runs every sampler and sends: its CPU share is above zero and below a core, its memory
    that of a Python process, and the collector stored its rows."""
    import duckdb

    got = measure_agent_process(tmp_path, build_node(tmp_path), seconds=2.0)
    assert 0 < got["core_share_at_1hz"] < 1.0, got
    assert 10 < got["rss_mib"] <= got["peak_rss_mib"], got
    threads = got["thread_cpu_ms_per_s"]  # the agent's threads carry their OS names
    assert {"c4-scheduler", "c4-sender"} <= set(threads), threads
    assert threads["c4-scheduler"] > 0, threads
    per_sampler = got["sampler_cpu_ms_per_s"]  # each sampler did work, as its health rows say
    assert per_sampler.get("gpu", 0) > 0 and per_sampler.get("nic", 0) > 0, per_sampler
    with duckdb.connect(str(tmp_path / "c4.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM gpu_samples WHERE node = 'bench-node'").fetchone()[0] > 0


def test_bad_bench_arguments_are_refused(capsys):
    """No tick count of zero (a division by zero), no negative time, no negative worker count."""
    from c4.cli import main

    for args in (
        ["agent", "--ticks", "0"],
        ["agent", "--ticks", "-5"],
        ["agent", "--process-s", "-1"],
        ["agent", "--compare-flush-s", "-1"],
    ):
        assert main(["bench", *args]) == 2
        assert "--ticks must be >= 1" in capsys.readouterr().err
    assert main(["bench", "goodput", "--jobs", "-1"]) == 2
    assert "--jobs >= 0" in capsys.readouterr().err


def test_the_compared_flush_interval_reaches_the_agents_config(tmp_path):
    """--compare-flush-s runs the agent with that flush_interval_s (and the agent accepts the file)."""
    from c4.bench.agent_process import _toml
    from c4.config import load_agent_config

    path = tmp_path / "agent.toml"
    path.write_text(_toml({}, "127.0.0.1:1", tmp_path / "spool", "n", flush_interval_s=5.0))
    assert load_agent_config(path).flush_interval_s == 5.0
    path.write_text(_toml({}, "127.0.0.1:1", tmp_path / "spool", "n"))
    assert load_agent_config(path).flush_interval_s == 1.0  # the agent's default
