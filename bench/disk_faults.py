"""Small file systems that fill up on demand: the disk faults of ``c4 bench chaos`` and the hostile tests.

A tmpfs of a few MiB is mounted (root, or CAP_SYS_ADMIN) where a collector keeps its store or an
agent its spool, then filled with a ballast file until (nearly) no space is left, and freed again.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path


class DiskFaultsUnavailable(RuntimeError):
    """A tmpfs cannot be mounted here (not root, or no mount permission); the message says why."""


def fill_up(directory: Path, leave_bytes: int = 0, name: str = "ballast") -> Path:
    """Write zeros into ``directory/name`` until its file system has at most ``leave_bytes`` free
    (0: until it reports ENOSPC, the last pages topped up too); returns the ballast file."""
    ballast = directory / name
    chunk = 1 << 20
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while chunk:
            free = shutil.disk_usage(directory).free
            if leave_bytes and free <= leave_bytes:
                break
            size = min(chunk, free - leave_bytes) if leave_bytes else chunk
            try:
                os.write(fd, b"\0" * max(size, 1))  # a short write leaves the rest to the next one
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2
    finally:
        os.close(fd)
    return ballast


class Tmpfs:
    """A tmpfs mounted at a directory for as long as this object lives (``unmount`` ends it)."""

    def __init__(self, path: Path, size: int | str, options: str = "") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        opts = f"size={size}" + (f",{options}" if options else "")
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "c4-tmpfs", str(path)], capture_output=True, text=True
        )
        if r.returncode:
            raise DiskFaultsUnavailable(
                f"cannot mount a tmpfs at {path} (needs root or CAP_SYS_ADMIN): {r.stderr.strip() or r.returncode}"
            )
        self.ballast = path / "ballast"

    def fill(self, leave_bytes: int = 0) -> Path:
        """Take all the free space but ``leave_bytes``."""
        return fill_up(self.path, leave_bytes, self.ballast.name)

    def free(self) -> None:
        """Remove the ballast."""
        self.ballast.unlink(missing_ok=True)

    def remount(self, read_only: bool) -> None:
        """Make the file system read-only, or writable again."""
        subprocess.run(
            ["mount", "-o", "remount," + ("ro" if read_only else "rw"), str(self.path)],
            check=True,
            capture_output=True,
        )

    def unmount(self) -> None:
        """Unmount it and whatever is mounted below it (lazily, in case a process still holds a file)."""
        for target in reversed(mounts_under(self.path)):
            subprocess.run(["umount", "-l", target], capture_output=True)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, outermost first (from /proc/self/mounts)."""
    root = str(path.resolve())
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p == root or p.startswith(root + "/")]
