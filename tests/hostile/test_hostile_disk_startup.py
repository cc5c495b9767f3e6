"""`c4 collector` that cannot start says why in one line (the path or address and the problem) and exits non-zero.

Each case runs a real `c4 collector` process: on a full disk, on a read-only DB directory, with the
DB path a directory or a corrupt file, with its ports taken, with an unreadable config file.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from testkit.procs import C4, free_port
from testkit.small_disk import bind_file, fill, small_tmpfs

from c4.catalogue import load
from c4.collector.store import Store


def run_collector(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*C4, "collector", *args], capture_output=True, text=True, timeout=120)


def assert_one_clear_line(done: subprocess.CompletedProcess, *fragments: str) -> None:
    """Non-zero exit, no traceback, and the last stderr line names every fragment."""
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("c4 collector: "), done.stderr
    for fragment in fragments:
        assert fragment in last, (fragment, done.stderr)


def new_store(path: Path) -> None:
    Store(path, load()).close()


def listen() -> str:
    return f"127.0.0.1:{free_port()}"


def test_restart_on_a_full_disk(tmp_path):
    # an empty store is ~6 MB since the rollup tables (10 tables of up to ~300 columns)
    with small_tmpfs(tmp_path / "disk", "16m") as disk:
        db = disk / "c4.duckdb"
        new_store(db)
        fill(disk)
        done = run_collector("--listen", listen(), "--db", str(db))
    assert_one_clear_line(done, str(db), "No space left on device")


def test_read_only_db_directory(tmp_path):
    with small_tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        done = run_collector("--listen", listen(), "--db", str(ro / "c4.duckdb"))
    assert_one_clear_line(done, str(ro / "c4.duckdb"), "Read-only file system")


def test_read_only_db_directory_with_a_writable_db_file(tmp_path):
    """The file opens, its write-ahead log beside it cannot be created."""
    new_store(tmp_path / "c4.duckdb")
    with small_tmpfs(tmp_path / "ro", "1m") as ro:
        db = ro / "c4.duckdb"
        db.touch()
        bind_file(tmp_path / "c4.duckdb", db)
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        done = run_collector("--listen", listen(), "--db", str(db))
    assert_one_clear_line(done, str(db), "Read-only file system")


def test_db_path_is_a_directory(tmp_path):
    (tmp_path / "c4.duckdb").mkdir()
    assert_one_clear_line(
        run_collector("--listen", listen(), "--db", str(tmp_path / "c4.duckdb")), str(tmp_path), "directory"
    )


def test_db_directory_under_a_regular_file(tmp_path):
    (tmp_path / "file").write_text("x")
    db = tmp_path / "file" / "c4.duckdb"
    assert_one_clear_line(run_collector("--listen", listen(), "--db", str(db)), str(tmp_path / "file"))


def test_corrupt_db_file(tmp_path):
    db = tmp_path / "c4.duckdb"
    db.write_bytes(b"not a database, just bytes\n" * 4000)
    assert_one_clear_line(run_collector("--listen", listen(), "--db", str(db)), str(db), "not a valid DuckDB")


@pytest.mark.parametrize("which", ["listen", "metrics-listen"])
def test_port_in_use(tmp_path, which):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        args = ["--db", str(tmp_path / "c4.duckdb")]
        args += (
            ["--listen", address]
            if which == "listen"
            else ["--listen", listen(), "--metrics-listen", address]
        )
        done = run_collector(*args)
    assert_one_clear_line(done, address, "in use")
    # nothing left half started: the store closed cleanly and opens again
    new_store(tmp_path / "c4.duckdb")


@pytest.mark.parametrize("kind", ["directory", "not utf-8", "missing"])
def test_unreadable_config(tmp_path, kind):
    config = tmp_path / "c4.toml"
    if kind == "directory":
        config.mkdir()
    elif kind == "not utf-8":
        config.write_bytes(b"[collector]\n# \xff\xfe\n")
    done = run_collector("--config", str(config), "--listen", listen(), "--db", str(tmp_path / "c4.duckdb"))
    assert_one_clear_line(done, str(config))
