"""The lake's file upkeep run in a child process of its own, so a native crash in it cannot take the collector down.

DuckLake's maintenance functions run beside the shards' commits; under that concurrency DuckDB 1.5.5's
DuckLake has aborted the whole process in our CI (``Fatal Python error: Aborted`` inside
``ducklake_flush_inlined_data``; and ``double free or corruption`` in a new lease holder whose log shows its
first upkeep pass started and none finished).
In a child, such a crash costs one pass: the collector logs how the child ended and its last stderr
lines, counts a failure, and keeps ingesting; the next pass starts a new child. A pass is rare
(``lake_upkeep_interval_s``, 600 s by default), so a process start per pass costs little.

The parent sends the lake's URL (passwords included: stdin, not argv, which ``ps`` shows), its data
path and the keep times as one JSON line on the child's stdin; the child attaches the lake with its
own DuckDB instance, runs ``lake_upkeep.upkeep`` and prints the result as one JSON line. The child
dies with the collector (``PR_SET_PDEATHSIG``: the kernel kills it when the thread that started it
ends, and the collector's upkeep threads live as long as it does).
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

import duckdb

from c4 import parent_death
from c4.collector.lake_upkeep import UpkeepResult, upkeep

#: ``python -P -m c4.collector.lake_upkeep_process`` (-P: a ``c4`` folder where the collector stands is not imported).
CHILD_COMMAND: list[str] = [sys.executable, "-P", "-m", "c4.collector.lake_upkeep_process"]
#: The child's stderr lines kept in the error that says why a pass failed.
STDERR_TAIL_LINES = 20


class UpkeepProcessError(RuntimeError):
    """The upkeep child failed, crashed or answered nonsense; the message says how, with its last stderr lines."""


def _how_it_ended(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class UpkeepChild:
    """Runs upkeep passes in child processes of ``command``; ``kill`` ends the one running (the collector
    closing: its PostgreSQL transaction rolls back)."""

    def __init__(self, command: Sequence[str] = CHILD_COMMAND) -> None:
        self.command = list(command)
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._closed = False

    def run(
        self, url: str, data_path: str, snapshot_keep_s: float, file_keep_s: float, timeout_s: float
    ) -> UpkeepResult:
        """One upkeep pass over the lake at ``url`` in a child (blocking until it ends); a child still
        running after ``timeout_s`` is killed and the pass fails."""
        request = {
            "parent_pid": os.getpid(),
            "url": url,
            "data_path": data_path,
            "snapshot_keep_s": snapshot_keep_s,
            "file_keep_s": file_keep_s,
        }
        with self._lock:
            if self._closed:
                raise UpkeepProcessError("the lake upkeep is closed (the collector is stopping)")
            child = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            self._running.add(child)
        try:
            out, err = child.communicate(json.dumps(request) + "\n", timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            raise UpkeepProcessError(
                f"the lake upkeep process did not finish within {timeout_s:g} s (lake_upkeep_timeout_s) and was "
                f"killed; its last words:\n{_tail(err) or '(none)'}"
            ) from None
        finally:
            with self._lock:
                self._running.discard(child)
        return _result(child.returncode, out, err)

    def kill(self) -> None:
        """Kill the pass running now, if any, and refuse later ones."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for child in running:
            child.kill()


def _tail(stderr: str) -> str:
    return "\n".join(stderr.strip().splitlines()[-STDERR_TAIL_LINES:])


def _result(code: int, stdout: str, stderr: str) -> UpkeepResult:
    """The child's answer, or an error saying how it ended and its last stderr lines."""
    if code != 0:
        raise UpkeepProcessError(
            f"the lake upkeep process {_how_it_ended(code)}; its last words:\n{_tail(stderr) or '(none)'}"
        )
    lines = stdout.strip().splitlines()
    try:
        return UpkeepResult(**json.loads(lines[-1]))
    except (IndexError, ValueError, TypeError) as exc:
        raise UpkeepProcessError(
            f"the lake upkeep process answered no result ({exc}): stdout {stdout[-300:]!r}, "
            f"stderr:\n{_tail(stderr) or '(none)'}"
        ) from None


def main() -> int:
    """The child: read the request on stdin, run one pass, print its result as JSON."""
    faulthandler.enable()  # a native crash prints the Python stack on stderr, which the parent logs
    from c4.collector.lake import LAKE, attach_lake  # lazy: c4.collector.lake imports this module

    request = json.loads(sys.stdin.readline())
    # a collector killed by SIGKILL or the OOM killer must not leave a pass holding a lake transaction
    # open with no one to end it
    parent_death.arm(
        parent_death.prctl_function(), int(request.get("parent_pid", os.getppid())), signal.SIGKILL
    )
    con = duckdb.connect()
    try:
        attach_lake(con, request["url"], request["data_path"])
        result = upkeep(con, LAKE, float(request["snapshot_keep_s"]), float(request["file_keep_s"]))
    finally:
        con.close()
    print(json.dumps(dataclasses.asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
