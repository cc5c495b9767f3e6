"""A small tmpfs the test mounts (as root) to fill up or make read-only; skipped where mounting is impossible."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from c4.bench.disk_faults import DiskFaultsUnavailable, Tmpfs, fill_up


@contextmanager
def small_tmpfs(
    path: Path, size: int | str = "16m", read_only: bool = False, options: str = ""
) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (bytes, or "16m") at ``path`` for the block; unmounted after."""
    opts = ",".join(o for o in (options, "ro" if read_only else "") if o)
    try:
        disk = Tmpfs(path, size, opts)
    except DiskFaultsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield path
    finally:
        disk.unmount()


def tmpfs(path: Path, size: int | str) -> Tmpfs:
    """A mounted Tmpfs the test fills and frees itself (and unmounts); skips where mounting is impossible."""
    try:
        return Tmpfs(path, size)
    except DiskFaultsUnavailable as exc:
        pytest.skip(str(exc))


def fill(path: Path, name: str = "filler") -> Path:
    """Write zeros into ``path/name`` until the file system has no space left; returns that file."""
    return fill_up(path, 0, name)


def bind_file(source: Path, target: Path) -> None:
    """Bind-mount the file ``source`` over ``target`` (so it stays writable inside a read-only tmpfs)."""
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True, capture_output=True)


def remount(path: Path, read_only: bool) -> None:
    """Remount the tmpfs at ``path`` read-only or read-write."""
    subprocess.run(
        ["mount", "-o", "remount," + ("ro" if read_only else "rw"), str(path)],
        check=True,
        capture_output=True,
    )
