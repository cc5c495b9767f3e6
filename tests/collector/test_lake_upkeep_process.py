"""The lake's upkeep runs in a child process: how the child ended reaches the collector as an error naming it,
with the child's last stderr lines; a hung child is killed (the store going on after a crash:
``test_lake_upkeep``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from testkit.wait import wait_for

from c4.collector.lake_upkeep import _conflict, run_step
from c4.collector.lake_upkeep_process import UpkeepChild, UpkeepProcessError


def child(code: str) -> list[str]:
    """A stand-in child that reads the request like the real one and then runs ``code``."""
    return [sys.executable, "-c", f"import sys, os, json; request = json.loads(sys.stdin.readline()); {code}"]


def test_a_child_killed_by_a_signal_is_named_with_its_last_words():
    aborting = child(
        "print('ducklake_flush_inlined_data: double free', file=sys.stderr, flush=True); os.abort()"
    )
    with pytest.raises(UpkeepProcessError, match="killed by SIGABRT") as err:
        UpkeepChild(aborting).run("postgres://c4@127.0.0.1:1/lake", "/nonexistent", 1.0, 1.0, 60)
    assert "double free" in str(err.value)


def test_a_child_that_answers_nonsense_or_nothing_is_an_error():
    with pytest.raises(UpkeepProcessError, match="answered no result"):
        UpkeepChild(child("print('not json')")).run("postgres://x@h/db", "/d", 1.0, 1.0, 60)
    with pytest.raises(UpkeepProcessError, match="answered no result"):
        UpkeepChild(child("print(json.dumps({'files_bad': 1}))")).run("postgres://x@h/db", "/d", 1.0, 1.0, 60)
    with pytest.raises(UpkeepProcessError, match="exited with code 3"):
        UpkeepChild(child("sys.exit(3)")).run("postgres://x@h/db", "/d", 1.0, 1.0, 60)


def test_the_child_receives_the_request_on_stdin_not_argv():
    echo = child("print(json.dumps({'files_before': len(sys.argv), 'conflicts': [request['url']]}))")
    got = UpkeepChild(echo).run("postgres://u:secret@h/db", "/d", 2.0, 3.0, 60)
    assert got.files_before == 1 and got.conflicts == ["postgres://u:secret@h/db"]


def test_a_child_that_hangs_is_killed_after_the_timeout():
    hanging = child(
        "print('stuck in a catalog lock', file=sys.stderr, flush=True); import time; time.sleep(600)"
    )
    started = time.monotonic()
    with pytest.raises(
        UpkeepProcessError, match=r"did not finish within 1 s \(lake_upkeep_timeout_s\)"
    ) as err:
        UpkeepChild(hanging).run("postgres://x@h/db", "/d", 1.0, 1.0, 1.0)
    assert "stuck in a catalog lock" in str(err.value)
    assert time.monotonic() - started < 60  # killed, not waited for


def test_closing_kills_the_running_pass_and_refuses_later_ones():
    upkeep = UpkeepChild(child("import time; time.sleep(600)"))
    failed: list[BaseException] = []

    def run() -> None:
        try:
            upkeep.run("postgres://x@h/db", "/d", 1.0, 1.0, 600)
        except UpkeepProcessError as exc:
            failed.append(exc)

    t = threading.Thread(target=run)
    t.start()
    wait_for(lambda: upkeep._running, timeout_s=30, what="the pass's child to start")
    upkeep.kill()
    t.join(30)
    assert not t.is_alive() and failed and "killed by SIGKILL" in str(failed[0])
    with pytest.raises(UpkeepProcessError, match="closed"):
        upkeep.run("postgres://x@h/db", "/d", 1.0, 1.0, 600)


def test_the_real_child_names_a_lake_it_cannot_reach(tmp_path):
    with pytest.raises(UpkeepProcessError, match="exited with code 1") as err:
        UpkeepChild().run("postgres://c4@127.0.0.1:1/lake", str(tmp_path / "data"), 1.0, 1.0, 60)
    assert "cannot attach the lake" in str(err.value)


def test_postgres_serialization_failures_count_as_conflicts_left_to_the_next_pass():
    flush = duckdb.Error(
        "Failed to delete flushed inlined data in DuckLake from table ducklake_inlined_data_1_1: Failed to execute "
        'query "DELETE FROM ...": ERROR:  could not serialize access due to concurrent update'
    )
    assert _conflict(flush)
    retried = duckdb.TransactionException(
        "TransactionContext Error: Failed to delete flushed inlined data in DuckLake from table "
        "ducklake_inlined_data_8_8: Current transaction is aborted (please ROLLBACK)"
    )
    assert _conflict(retried)
    assert _conflict(duckdb.TransactionException("Transaction conflict - attempting to delete"))
    assert not _conflict(duckdb.IOException("No space left on device"))


def test_a_conflicted_step_leaves_no_aborted_transaction_behind():
    """A step that lost a race (here an error saying so, raised at run time inside a transaction, which
    aborts it as the flush's did) is named and gives nothing; the next step runs instead of meeting
    "Current transaction is aborted"; any other error is raised."""
    con = duckdb.connect()
    con.execute("BEGIN")
    conflicts: list[str] = []
    lost = "SELECT error('could not serialize access due to concurrent update')"
    assert run_step(con, "flush_inlined_data", lost, conflicts) == []
    assert run_step(con, "merge_adjacent_files", "SELECT 1", conflicts) == [(1,)]
    assert conflicts == ["flush_inlined_data"]
    with pytest.raises(duckdb.Error, match="disk"):
        run_step(con, "expire_snapshots", "SELECT error('No space left on device: disk full')", conflicts)
    assert conflicts == ["flush_inlined_data"]


def test_the_real_child_dies_with_a_collector_killed_by_sigkill(tmp_path):
    """A collector killed by SIGKILL (or the OOM killer) cannot kill its upkeep child; the kernel does
    (PR_SET_PDEATHSIG). The child here waits on a 'PostgreSQL' that accepts and never answers."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts the connection; nothing ever answers libpq's startup message
    port = silent.getsockname()[1]
    collector = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from c4.collector.lake_upkeep_process import UpkeepChild\n"
            f"UpkeepChild().run('postgres://c4@127.0.0.1:{port}/lake', {str(tmp_path / 'data')!r}, 1.0, 1.0, 600)",
        ]
    )
    try:
        children = Path(f"/proc/{collector.pid}/task/{collector.pid}/children")
        wait_for(lambda: children.read_text().split(), 60, "the upkeep child to start")
        [upkeep_pid] = (int(pid) for pid in children.read_text().split())
        time.sleep(1.0)  # it reads its request and blocks on the silent server
        assert Path(f"/proc/{upkeep_pid}").exists()
        collector.kill()
        collector.wait(10)

        def gone() -> bool:
            try:  # a zombie until its new parent reaps it counts as gone
                return Path(f"/proc/{upkeep_pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                return True

        wait_for(gone, 20, "the upkeep child to die with its parent")
    finally:
        if collector.poll() is None:
            collector.kill()
        silent.close()
