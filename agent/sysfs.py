"""Small, crash-proof, non-blocking readers of sysfs and proc files: every agent file read goes through here.

A file is opened with O_NONBLOCK and kept only if fstat says it is a regular file (sysfs and proc
attributes are), so a FIFO or a device put where a counter should be is refused at once instead of
hanging the reader. Text is decoded as UTF-8 with replacement, never dropped.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import stat
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

RATE = re.compile(r"^\s*([\d.]+)\s*([GMK]?)b/sec", re.IGNORECASE)
UNIT = {"G": 1_000_000_000, "M": 1_000_000, "K": 1_000, "": 1}
U64_LIMIT = 1 << 64  # counters and rates are stored as UBIGINT
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


class SysfsError(ValueError):
    """A sysfs file exists but does not hold what it should."""


class NotRegularFile(OSError):
    """The path is a FIFO, a socket, a device or a directory: reading it could block or never end."""


def open_regular(path: Path | str) -> int:
    """File descriptor of a regular file, opened without blocking; raises OSError (NotRegularFile for
    a FIFO, device or directory, which are closed again at once)."""
    return _open_regular_stat(path)[0]


def _open_regular_stat(path: Path | str) -> tuple[int, os.stat_result]:
    """As ``open_regular``, with the file's stat."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularFile(errno.EINVAL, f"not a regular file ({stat.filemode(st.st_mode)[0]})", str(path))
    return fd, st


def read_bytes(path: Path | str, max_bytes: int = 4096) -> bytes | None:
    """Up to ``max_bytes`` of a regular file; None when missing, unreadable or not a regular file."""
    try:
        fd = open_regular(path)
    except OSError:
        return None
    try:
        chunks: list[bytes] = []
        left = max_bytes
        while left > 0:
            data = os.read(fd, min(left, 1 << 20))
            if not data:
                break
            chunks.append(data)
            left -= len(data)
            if max_bytes <= 4096:  # an attribute file: one read returns all of it
                break
        return b"".join(chunks)
    except OSError:  # EISDIR, or EINVAL/EIO from a driver that refuses the read
        return None
    finally:
        os.close(fd)


def read_text(path: Path | str, max_bytes: int = 4096) -> str | None:
    """File contents (UTF-8 with replacement) stripped, or None when missing, unreadable or not a
    regular file (a FIFO, a device, a directory)."""
    data = read_bytes(path, max_bytes)
    return None if data is None else data.decode("utf-8", "replace").strip()


def read_counter(path: str) -> int | None:
    """A counter file as an int; None when missing, not a regular file, not a number, or outside
    0 <= n < 2^64 (what a UBIGINT column holds)."""
    return counter_of(read_bytes(path, 64))


def counter_of(data: bytes | None) -> int | None:
    """A counter file's bytes as an int; None when absent, not a number, or outside 0 <= n < 2^64."""
    if data is None:
        return None
    try:
        value = int(data)
    except ValueError:
        value = parse_counter(data.decode("utf-8", "replace"))
    return value if value is not None and 0 <= value < U64_LIMIT else None


def in_place_devs(*roots: Path | str) -> frozenset[int]:
    """Devices (``st_dev``) of the file systems whose files are regenerated on every read and never replaced
    by another file: sysfs and procfs (at /sys and /proc), and those of ``roots`` (a static tree read as if)."""
    devs = set()
    for root in ("/sys", "/proc", *roots):
        try:
            devs.add(os.stat(root).st_dev)
        except OSError:
            continue
    return frozenset(devs)


#: A directory whose mtime is at least this much older than a file's last check had no rename or removal
#: since (file timestamps come from a clock a few ms coarse; 1 s leaves room for any local file system).
UNCHANGED_MARGIN_NS = 1_000_000_000


class HeldFiles:
    """Attribute files kept open between ticks and re-read with one ``pread`` each.

    Opening, checking and closing a file per read is four system calls; a sampler reading ~330 counter
    files a second spent most of its tick there. sysfs and procfs regenerate a file on every read from
    offset 0, so a held descriptor always reads the current value; a read that fails (the device went
    away) drops it and opens the path again at once. A file on neither (a fixture tree, the
    twin's files, which a writer replaces by rename) is checked by ``stat`` before each read and
    reopened when it is a new file; within a pass (``new_pass()``, once per sampler tick) one ``stat`` of
    its directory stands for those of its files instead, as long as the directory has not changed since
    well before the file was last checked (a rename or removal there moves the directory's mtime; git's
    "racily clean" rule). At most ``max_open`` descriptors are held; the rest are read as ``read_bytes`` does.
    """

    #: Descriptors held by every HeldFiles of the process together, at most a quarter of the open-files
    #: limit: one process may run many samplers (the twin runs a node's worth each), and a held
    #: descriptor must never cost another file its open. Past it, files are read as read_bytes does.
    _budget_lock = threading.Lock()
    _held_total = 0

    def __init__(self, max_open: int = 512, in_place: frozenset[int] | None = None) -> None:
        self.max_open = max_open
        # files on these devices are read through a held descriptor with no check (default: ``in_place_devs()``)
        self._in_place = in_place_devs() if in_place is None else in_place
        # path -> (fd, inode to check or None on sysfs, time.time_ns() before it was last found to be that inode)
        self._held: dict[str, tuple[int, int | None, int]] = {}
        self._pass = 0  # 0: no passes, every read of a non-sysfs file checks the file itself
        self._dirs: dict[str, tuple[int, int | None]] = {}  # directory -> (pass, st_mtime_ns or None)
        self._size_hints: dict[str, int] = {}  # path -> bytes to ask for in read_whole
        # a sampler dropped without close() still gives its descriptors back
        weakref.finalize(self, HeldFiles._close_all, self._held)

    @staticmethod
    def _process_budget() -> int:
        try:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (OSError, ValueError):
            return 0
        return 1 << 20 if soft == resource.RLIM_INFINITY else soft // 4

    def _take(self) -> bool:
        """One descriptor of the process's budget (False when spent)."""
        with HeldFiles._budget_lock:
            if len(self._held) >= self.max_open or HeldFiles._held_total >= self._process_budget():
                return False
            HeldFiles._held_total += 1
            return True

    @staticmethod
    def _close_all(held: dict[str, tuple[int, int | None, int]]) -> None:
        for fd, _, _ in held.values():
            try:
                os.close(fd)
            except OSError:
                pass
        with HeldFiles._budget_lock:
            HeldFiles._held_total -= len(held)
        held.clear()

    def new_pass(self) -> None:
        """Start a pass over the files (a sampler tick): each directory is looked at once per pass."""
        self._pass += 1
        if len(self._dirs) > 4 * max(len(self._held), 64):
            self._dirs.clear()

    def _dir_mtime_ns(self, directory: str) -> int | None:
        """The directory's mtime, read once per pass (None when it cannot be read)."""
        hit = self._dirs.get(directory)
        if hit is not None and hit[0] == self._pass:
            return hit[1]
        try:
            mtime: int | None = os.stat(directory).st_mtime_ns
        except OSError:
            mtime = None
        self._dirs[directory] = (self._pass, mtime)
        return mtime

    def read_bytes(self, path: str, max_bytes: int = 64) -> bytes | None:
        """Up to ``max_bytes`` of a regular file; None when missing, unreadable or not a regular file."""
        held = self._held.get(path)
        if held is not None:
            fd, ino, checked_ns = held
            try:
                if ino is None:
                    return os.pread(fd, max_bytes, 0)
                if self._pass:
                    mtime = self._dir_mtime_ns(path.rpartition("/")[0])
                    if mtime is not None and mtime < checked_ns - UNCHANGED_MARGIN_NS:
                        return os.pread(fd, max_bytes, 0)  # nothing renamed or removed there since the check
                now_ns = time.time_ns()
                if os.stat(path).st_ino == ino:
                    self._held[path] = (fd, ino, now_ns)
                    return os.pread(fd, max_bytes, 0)
            except OSError:
                pass
            self._drop(path)  # replaced, gone or failing: open it again below
        opened_ns = time.time_ns()
        try:
            fd, st = _open_regular_stat(path)
        except OSError:
            return None
        try:
            data = os.pread(fd, max_bytes, 0)
        except OSError:
            os.close(fd)
            return None
        if self._take():
            self._held[path] = (fd, None if st.st_dev in self._in_place else st.st_ino, opened_ns)
        else:
            os.close(fd)
        return data

    def read_whole(self, path: str, max_bytes: int) -> bytes | None:
        """A whole file of up to ``max_bytes`` (a /proc file) through a held descriptor, read in one ``pread``
        of the size its last read suggested (a larger one only when that filled up): no buffer of
        ``max_bytes`` is allocated per read, as ``read_bytes`` of a large limit would."""
        hint = self._size_hints.get(path, 4096)
        while True:
            data = self.read_bytes(path, hint)
            if data is None or len(data) < hint or hint >= max_bytes:
                break
            hint = min(max_bytes, hint * 4)
        if data is not None:
            self._size_hints[path] = max(4096, (len(data) * 2 + 4095) & ~4095)
        return data

    def read_counters(self, paths: Sequence[str]) -> list[int | None]:
        """``read_counter`` of each path, as one loop: a held descriptor that needs no check (on sysfs, or
        its directory unchanged this pass) is read with one ``pread`` and no call in between, ~0.5 µs a file
        instead of ~3; any other path goes through ``read_counter``."""
        out: list[int | None] = []
        append = out.append
        held_get = self._held.get
        pread = os.pread
        passed = self._pass
        for path in paths:
            held = held_get(path)
            if held is not None:
                fd, ino, checked_ns = held
                if ino is None or (
                    passed
                    and (mtime := self._dir_mtime_ns(path.rpartition("/")[0])) is not None
                    and mtime < checked_ns - UNCHANGED_MARGIN_NS
                ):
                    try:
                        data = pread(fd, 64, 0)
                    except OSError:
                        append(self.read_counter(path))  # drops it and opens the path again
                        continue
                    try:
                        value = int(data)
                    except ValueError:
                        append(counter_of(data))
                        continue
                    append(value if 0 <= value < U64_LIMIT else None)
                    continue
            append(self.read_counter(path))
        return out

    def read_counter(self, path: str) -> int | None:
        """As module-level ``read_counter``, through a held descriptor."""
        return counter_of(self.read_bytes(path, 64))

    def read_text(self, path: str) -> str | None:
        """As module-level ``read_text`` for a small attribute, through a held descriptor."""
        data = self.read_bytes(path, 4096)
        return None if data is None else data.decode("utf-8", "replace").strip()

    def keep_only(self, paths: set[str]) -> None:
        """Close the held descriptors of every path not in ``paths`` (the files no longer read)."""
        for path in [p for p in self._held if p not in paths]:
            self._drop(path)
        self._dirs.clear()

    def _drop(self, path: str) -> None:
        fd, _, _ = self._held.pop(path)
        with HeldFiles._budget_lock:
            HeldFiles._held_total -= 1
        try:
            os.close(fd)
        except OSError:
            pass

    def close(self) -> None:
        """Close every held descriptor."""
        HeldFiles._close_all(self._held)


def parse_counter(text: str | None) -> int | None:
    """'12345' -> 12345; 'N/A (no PMA)', '' or garbage -> None."""
    if text is None:
        return None
    token = text.split()[0] if text.split() else ""
    if token.isdecimal() and len(token) < 64:  # isdigit() also takes '²', which int() refuses
        return int(token)
    if token.lower().startswith("0x"):
        try:
            return int(token, 16)
        except ValueError:
            return None
    return None


def parse_state(text: str | None) -> tuple[int | None, str]:
    """'4: ACTIVE' -> (4, 'ACTIVE'); 'LinkUp' -> (None, 'LinkUp')."""
    if not text:
        return None, ""
    code, sep, name = text.partition(":")
    if sep and code.strip().isdecimal() and len(code.strip()) < 10:
        return int(code), name.strip()
    return None, text.strip()


def parse_rate_bps(text: str | None) -> int | None:
    """'25 Gb/sec (1X EDR)' -> 25_000_000_000; '2.5 Gb/sec' -> 2_500_000_000; None when out of range."""
    if not text:
        return None
    m = RATE.match(text)
    if not m:
        return None
    try:
        bps = float(m.group(1)) * UNIT[m.group(2).upper()]
    except ValueError:  # '1.2.3'
        return None
    return int(bps) if 0 <= bps < U64_LIMIT else None  # also refuses inf and nan


def resolve_entry(class_dir: Path, name: str) -> Path | None:
    """A /sys/class/<x>/<name> entry as a directory: a real symlink, a directory, or a captured
    tree where the symlink was saved as a text file holding its target."""
    p = class_dir / name
    if p.is_dir():
        return p
    if p.is_file():
        target = read_text(p)
        if target and "/" in target and len(target) < 1024:
            resolved = (class_dir / target).resolve()
            if resolved.is_dir():
                return resolved
    return None
