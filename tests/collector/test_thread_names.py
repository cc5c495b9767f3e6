"""The collector's threads carry their names in the OS, so that ``top -H`` and ``c4 bench load`` tell them apart."""

from __future__ import annotations

import time
from pathlib import Path

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
