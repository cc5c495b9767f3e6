"""The lake's file upkeep run in a child process of its own, so a native crash in it cannot take the collector down.

DuckLake's maintenance functions run beside the shards' commits; under that concurrency DuckDB 1.5.5's
DuckLake has aborted the whole process (``Fatal Python error: Aborted`` inside
``ducklake_flush_inlined_data``, and ``double free or corruption`` in a lease holder's first upkeep pass).
In a child, such a crash costs one pass: the collector logs how the child ended and its last stderr
lines, counts a failure, and keeps ingesting; the next pass starts a new child. A pass is rare
(``lake_upkeep_interval_s``, 600 s by default), so a process start per pass costs little.

The parent sends the lake's URL (passwords included: stdin, not argv, which ``ps`` shows), its data
path and the keep times as one JSON line on the child's stdin; the child attaches the lake with its
own DuckDB instance, runs ``lake_upkeep.upkeep`` and prints the result as one JSON line.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import signal
import subprocess
import sys
from collections.abc import Sequence

import duckdb

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


def upkeep_in_child(
    url: str,
    data_path: str,
    snapshot_keep_s: float,
    file_keep_s: float,
    command: Sequence[str] = CHILD_COMMAND,
) -> UpkeepResult:
    """One upkeep pass over the lake at ``url`` in a child process (blocking until it ends)."""
    request = {
        "url": url,
        "data_path": data_path,
        "snapshot_keep_s": snapshot_keep_s,
        "file_keep_s": file_keep_s,
    }
    done = subprocess.run(list(command), input=json.dumps(request) + "\n", capture_output=True, text=True)
    tail = "\n".join(done.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
    if done.returncode != 0:
        raise UpkeepProcessError(
            f"the lake upkeep process {_how_it_ended(done.returncode)}; its last words:\n{tail or '(none)'}"
        )
    lines = done.stdout.strip().splitlines()
    try:
        fields = json.loads(lines[-1])
        return UpkeepResult(**fields)
    except (IndexError, ValueError, TypeError) as exc:
        raise UpkeepProcessError(
            f"the lake upkeep process answered no result ({exc}): stdout {done.stdout[-300:]!r}, "
            f"stderr:\n{tail or '(none)'}"
        ) from None


def main() -> int:
    """The child: read the request on stdin, run one pass, print its result as JSON."""
    faulthandler.enable()  # a native crash prints the Python stack on stderr, which the parent logs
    from c4.collector.lake import LAKE, attach_lake  # lazy: c4.collector.lake imports this module

    request = json.loads(sys.stdin.readline())
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
