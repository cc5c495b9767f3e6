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

    def close(self) -> None:
        """Close the current file handle."""
        if self._fh is not None:
            self._fh.close()
        self._fh = None


class DirectoryTailer:
    """Tails every file matching a glob under a directory, picking up new files as they appear."""

    def __init__(self, directory: Path | str, pattern: str = "*", start_at_end: bool = False) -> None:
        self.directory = Path(directory)
        self.pattern = pattern
        self.start_at_end = start_at_end
        self.tailers: dict[Path, FileTailer] = {}
        self._first_scan = True
        self._turn = 0  # which file reads first this call, so one busy file cannot starve the others

    def read_lines(self, max_bytes: int = DEFAULT_MAX_BYTES_PER_TICK) -> list[tuple[Path, str]]:
        """New complete lines of the files, as (path, line), reading at most ``max_bytes`` in all.

        Files take turns going first, so a huge file delays the others by a call at most."""
        out: list[tuple[Path, str]] = []
        if self.directory.is_dir():
            for path in sorted(self.directory.glob(self.pattern)):
                if path not in self.tailers and path.is_file():
                    self.tailers[path] = FileTailer(path, start_at_end=self.start_at_end and self._first_scan)
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
            if tailer.at_eof and not path.exists():
                tailer.close()
                del self.tailers[path]
        return out

    def close(self) -> None:
        """Close every file."""
        for t in self.tailers.values():
            t.close()
        self.tailers.clear()
