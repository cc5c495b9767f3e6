"""Follow a growing text file the way `tail -F` does: rotation, truncation, partial lines.

Reads are bounded: one call reads at most a byte budget (a 512 MiB file is streamed over many ticks,
never read at once) and continues where it stopped on the next call. Files are opened without
blocking and only if they are regular files (a FIFO in a log directory is skipped), and lines are
decoded as UTF-8 with replacement: a line with invalid bytes is kept, never dropped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from c4.agent.sysfs import open_regular

log = logging.getLogger("c4.agent.tail")

#: Bytes one sampler reads from its files per tick unless configured (``max_bytes_per_tick``).
DEFAULT_MAX_BYTES_PER_TICK = 16 << 20
READ_CHUNK_BYTES = 1 << 20


@dataclass
class TailStats:
    """What the tailer had to cope with."""

    rotations: int = 0
    truncations: int = 0
    oversized_lines: int = 0
    undecodable_lines: int = 0  # lines with invalid UTF-8, kept with U+FFFD in place of the bad bytes


@dataclass
class FileTailer:
    """Yields complete new lines of one path across rotation (new inode) and truncation.

    A line without its trailing newline is held back until it is completed; a line
    longer than ``max_line_bytes`` is dropped and counted. ``start_at_end`` skips
    what the file held when first opened (a log that existed before the agent).
    """

    path: Path
    start_at_end: bool = False
    max_line_bytes: int = 1 << 20
    stats: TailStats = field(default_factory=TailStats)
    _fh: BinaryIO | None = None
    _inode: int | None = None
    _offset: int = 0
    _partial: bytes = b""
    _skip_rest_of_line: bool = False
    at_eof: bool = True  # the last call read everything the open file held
    last_read_bytes: int = 0  # bytes the last call read
    retired: tuple[int, int] | None = None  # (inode, offset) of the file it left at its last rotation

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def _open(self, at_end: bool) -> bool:
        try:
            fd = open_regular(self.path)  # a FIFO or device here is refused, never waited on
        except OSError:
            return False
        fh = os.fdopen(fd, "rb", buffering=0)
        st = os.fstat(fd)
        self._fh, self._inode = fh, st.st_ino
        self._offset = st.st_size if at_end else 0
        fh.seek(self._offset)
        self._partial = b""
        return True

    def read_lines(self, max_bytes: int = DEFAULT_MAX_BYTES_PER_TICK) -> list[str]:
        """Complete lines appended since the last call (UTF-8 with replacement, newline stripped),
        reading at most ``max_bytes``; the rest comes on the next call."""
        self.last_read_bytes = 0
        if self._fh is None and not self._open(self.start_at_end):
            return []
        self.start_at_end = False  # only the very first open skips old content
        lines = self._drain(max_bytes)
        if not self.at_eof:
            return lines  # budget spent: rotation and truncation are looked at once caught up
        try:
            st = os.stat(self.path)
        except OSError:
            return lines  # rotated away, new file not there yet: keep the old handle
        if st.st_ino != self._inode:
            lines += self._drain(max_bytes - self.last_read_bytes)  # what the old file got meanwhile
            if not self.at_eof:
                return lines
            self.retired = (self._inode, self._offset) if self._inode is not None else None
            self.close()
            self.stats.rotations += 1
            if self._open(False):
                lines += self._drain(max_bytes - self.last_read_bytes)
        elif st.st_size < self._offset:
            self.stats.truncations += 1
            log.info("file truncated path=%s", self.path)
            assert self._fh is not None
            self._fh.seek(0)
            self._offset, self._partial = 0, b""
            lines += self._drain(max_bytes - self.last_read_bytes)
        return lines

    def _drain(self, max_bytes: int) -> list[str]:
        """Lines from the open file's next ``max_bytes`` at most; sets at_eof and adds to last_read_bytes."""
        fh = self._fh
        out: list[str] = []
        if fh is None:
            self.at_eof = True
            return out
        self.at_eof = False
        left = max_bytes
        while left > 0:
            data = fh.read(min(left, READ_CHUNK_BYTES))
            if not data:
                self.at_eof = True
                break
            left -= len(data)
            self._offset += len(data)
            self.last_read_bytes += len(data)
            self._split(data, out)
        return out

    def _split(self, data: bytes, out: list[str]) -> None:
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        for raw in chunks:
            if self._skip_rest_of_line:
                self._skip_rest_of_line = False
                continue
            if len(raw) > self.max_line_bytes:
                self.stats.oversized_lines += 1
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.stats.undecodable_lines += 1
                line = raw.decode("utf-8", "replace")
            out.append(line.rstrip("\r"))
        if len(self._partial) > self.max_line_bytes:
            self.stats.oversized_lines += 1
            self._partial = b""
            self._skip_rest_of_line = True

    def take_over(self, other: FileTailer) -> None:
        """Continue where ``other`` is in the file it holds (renamed to this path); ``other`` starts afresh."""
        self.close()
        self._fh, self._inode, self._offset, self._partial = (
            other._fh,
            other._inode,
            other._offset,
            other._partial,
        )
        self._skip_rest_of_line = other._skip_rest_of_line
        other._fh, other._inode, other._offset, other._partial = None, None, 0, b""
        other._skip_rest_of_line = False
        other.start_at_end = False

    def resume_at(self, inode: int, offset: int) -> None:
        """Open the path and continue at ``offset`` when it is still file ``inode`` that long (else from its start)."""
        if self._fh is None and self._open(False) and self._inode == inode:
            assert self._fh is not None
            if os.fstat(self._fh.fileno()).st_size >= offset:
                self._fh.seek(offset)
                self._offset = offset

    def close(self) -> None:
        """Close the current file handle."""
        if self._fh is not None:
            self._fh.close()
        self._fh = None


class DirectoryTailer:
    """Tails every file matching a glob under a directory, picking up new files as they appear.

    A file renamed to another name the glob matches (a writer's own rotation, ``x.jsonl`` -> ``x.1.jsonl``)
    is not read twice: the new name continues where the old name's tailer was in it."""

    def __init__(self, directory: Path | str, pattern: str = "*", start_at_end: bool = False) -> None:
        self.directory = Path(directory)
        self.pattern = pattern
        self.start_at_end = start_at_end
        self.tailers: dict[Path, FileTailer] = {}
        self._first_scan = True
        self._turn = 0  # which file reads first this call, so one busy file cannot starve the others
        self._retired: dict[int, int] = {}  # inode -> offset read, of files rotated away from a tailed name

    def read_lines(self, max_bytes: int = DEFAULT_MAX_BYTES_PER_TICK) -> list[tuple[Path, str]]:
        """New complete lines of the files, as (path, line), reading at most ``max_bytes`` in all.

        Files take turns going first, so a huge file delays the others by a call at most."""
        out: list[tuple[Path, str]] = []
        if self.directory.is_dir():
            for path in sorted(self.directory.glob(self.pattern)):
                if path not in self.tailers and path.is_file():
                    self.tailers[path] = self._new_tailer(path)
        self._first_scan = False
        items = sorted(self.tailers.items())
        if items:
            self._turn %= len(items)
            items = items[self._turn :] + items[: self._turn]
            self._turn += 1
        left = max_bytes
        for path, tailer in items:
            if left <= 0:
                break
            out += [(path, line) for line in tailer.read_lines(left)]
            left -= tailer.last_read_bytes
            if tailer.retired is not None:
                self._retired[tailer.retired[0]] = tailer.retired[1]
                tailer.retired = None
            if tailer.at_eof and not path.exists():
                tailer.close()
                del self.tailers[path]
        while len(self._retired) > 1024:  # renamed to names the glob never matches: forget the oldest
            del self._retired[next(iter(self._retired))]
        return out

    def _new_tailer(self, path: Path) -> FileTailer:
        """A tailer for a path seen for the first time; a renamed file continues where it was."""
        tailer = FileTailer(path, start_at_end=self.start_at_end and self._first_scan)
        if self._first_scan:
            return tailer
        try:
            inode = os.stat(path).st_ino
        except OSError:
            return tailer
        holder = next((t for t in self.tailers.values() if t._inode == inode and t._fh is not None), None)
        if holder is not None:  # renamed since the last call: its old name's tailer has not noticed yet
            tailer.take_over(holder)
        elif inode in self._retired:  # renamed, and its old name's tailer read it up to the rotation
            tailer.resume_at(inode, self._retired.pop(inode))
        return tailer

    def close(self) -> None:
        """Close every file."""
        for t in self.tailers.values():
            t.close()
        self.tailers.clear()
