"""A small tmpfs the test mounts (as root) to fill up or make read-only; skipped where mounting is impossible."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(path: Path, size: str = "16m", read_only: bool = False) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``path`` for the block; unmounted after (lazily if still busy)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {path} (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield path
    finally:
        for target in reversed(mounts_under(path)):
            subprocess.run(["umount", "-l", target], capture_output=True)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, outermost first (from /proc/self/mounts)."""
    root = str(path.resolve())
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p == root or p.startswith(root + "/")]


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


def fill(path: Path, name: str = "filler") -> Path:
    """Write zeros into ``path/name`` until the file system has no space left; returns that file."""
    filler = path / name
    chunk = b"\0" * (1 << 16)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, chunk)  # a short write leaves the rest to the next, which fails with ENOSPC
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]  # top up the last pages too
    finally:
        os.close(fd)
    return filler
