"""``c4 bench agent``'s process figures: a real agent process against a real collector, read from /proc."""

from __future__ import annotations

import os

from c4.bench.agent import build_node
from c4.bench.agent_process import (
    cpu_s_between,
    measure_agent_process,
    proc_figures,
    task_cpu_ns,
    task_times_ns,
    thread_shares,
)


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

    assert main(["bench", "agent", "--ticks", "0"]) == 2
    assert "--ticks must be >= 1" in capsys.readouterr().err
    for args in (  # negative numbers: refused by every c4 command's flags (c4.cli_numbers)
        ["agent", "--ticks", "-5"],
        ["agent", "--process-s", "-1"],
        ["agent", "--compare-flush-s", "-1"],
        ["goodput", "--jobs", "-1"],
    ):
        assert main(["bench", *args]) == 2
        assert f"argument {args[1]}: {args[2]} is negative: give 0 or more" in capsys.readouterr().err


def test_the_compared_flush_interval_reaches_the_agents_config(tmp_path):
    """--compare-flush-s runs the agent with that flush_interval_s (and the agent accepts the file)."""
    from c4.bench.agent_process import _toml
    from c4.config import load_agent_config

    path = tmp_path / "agent.toml"
    path.write_text(_toml({}, "127.0.0.1:1", tmp_path / "spool", "n", flush_interval_s=5.0))
    assert load_agent_config(path).flush_interval_s == 5.0
    path.write_text(_toml({}, "127.0.0.1:1", tmp_path / "spool", "n"))
    assert load_agent_config(path).flush_interval_s == 1.0  # the agent's default


def test_thread_shares_name_the_main_thread_sum_a_name_and_leave_out_ended_threads(tmp_path):
    """From two readings of a (captured) /proc: the first thread is ``main`` whatever its comm, threads of one
    name add up, a thread started in between counts from zero, one ended in between is left out, and the
    run-queue wait comes from schedstat's second field."""

    def capture(tasks: dict[int, tuple[str, int, int] | None]):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        for tid, task in tasks.items():
            d = root / "100" / "task" / str(tid)
            d.mkdir(parents=True)
            if task is None:  # a thread that ended while the task directory was read: no files
                continue
            name, ran, waited = task
            (d / "comm").write_text(name + "\n")
            (d / "schedstat").write_text(f"{ran} {waited} 42\n")
        return task_times_ns(100, root)

    before = capture(
        {
            100: ("python", 1_000_000_000, 0),
            101: ("c4-writer", 0, 0),
            102: ("gone", 5, 5),
            107: ("python", 900_000_000, 0),  # ends; its id goes to a new c4-metrics thread
        }
    )
    after = capture(
        {
            103: None,
            100: ("python", 1_500_000_000, 100_000_000),
            101: ("c4-writer", 1_200_000_000, 400_000_000),
            104: ("python", 200_000_000, 0),
            105: ("python", 100_000_000, 0),
            106: ("jemalloc_bg_thd", 0, 0),  # idle all along: left out
            107: ("c4-metrics", 20_000_000, 0),
        }
    )
    got = thread_shares(100, before, after, wall_s=2.0)
    assert list(got) == ["c4-writer", "main", "python", "c4-metrics"]  # busiest first
    assert got["c4-metrics"] == {"cores": 0.01, "runq_wait_s_per_s": 0.0}  # counted from 0, not from 0.9 s
    assert got["c4-writer"] == {"cores": 0.6, "runq_wait_s_per_s": 0.2}
    assert got["main"] == {"cores": 0.25, "runq_wait_s_per_s": 0.05}
    assert got["python"] == {"cores": 0.15, "runq_wait_s_per_s": 0.0}
    assert task_times_ns(99999999, tmp_path) == {}  # a process that is gone


def test_a_busy_named_thread_of_this_process_shows_its_cpu():
    """Read from the real /proc: a thread named through name_os_thread that burns CPU shows under its name."""
    import threading
    import time

    from c4.thread_names import name_os_thread

    named, go, burnt, release = threading.Event(), threading.Event(), threading.Event(), threading.Event()

    def burn():
        name_os_thread("c4-burner")
        named.set()
        go.wait(5)
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        burnt.set()
        release.wait(5)  # alive until read

    t = threading.Thread(target=burn)
    t.start()
    named.wait(5)
    before = task_times_ns(os.getpid())
    go.set()
    burnt.wait(5)
    after = task_times_ns(os.getpid())
    release.set()
    t.join()
    shares = thread_shares(os.getpid(), before, after, wall_s=0.2)
    assert "c4-burner" in shares and shares["c4-burner"]["cores"] > 0, shares
