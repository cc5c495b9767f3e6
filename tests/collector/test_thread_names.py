"""The collector's threads carry their names in the OS, so that ``top -H`` and ``c4 bench load`` tell them apart; a
native crash leaves each thread's Python stack in the collector's log."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from testkit.wait import wait_for

from c4.sim.procs import start_collector


def _thread_names(pid: int) -> set[str]:
    names = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names.add((task / "comm").read_text().strip())
        except OSError:  # the thread ended meanwhile
            continue
    return names


def test_a_running_collector_names_its_writer_checkpointer_and_query_watchdog(tmp_path):
    """A real collector process: its writer, background checkpointer and query watchdog show under their
    names (every other thread shows as the interpreter, 'python', as before)."""
    proc = start_collector(tmp_path / "c")
    try:
        want = {"c4-writer", "c4-checkpointer", "c4-query-watch"}
        deadline = time.monotonic() + 30
        while not want <= (names := _thread_names(proc.proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert want <= names, names
    finally:
        proc.stop()


def test_a_native_crash_of_the_collector_leaves_every_threads_python_stack_in_its_log(tmp_path):
    """A fatal signal (what a native crash in DuckDB or an extension raises) is written up by faulthandler:
    the log names the signal and shows the Python stacks, the writer's among them, not only glibc's line."""
    proc = start_collector(tmp_path / "c")
    pid = proc.proc.pid
    wait_for(lambda: "c4-writer" in _thread_names(pid), timeout_s=30, what="the collector's writer thread")
    os.kill(pid, signal.SIGSEGV)
    assert proc.proc.wait(timeout=30) == -signal.SIGSEGV
    log = (tmp_path / "c" / "collector.log").read_text(errors="replace")
    assert "Fatal Python error: Segmentation fault" in log, log[-2000:]
    assert "writer.py" in log and "Thread 0x" in log, log[-3000:]
