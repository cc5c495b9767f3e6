"""Follow a growing text file the way `tail -F` does: rotation, truncation, partial lines."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("c4.agent.tail")


@dataclass
class TailStats:
    """What the tailer had to cope with."""

    rotations: int = 0
    truncations: int = 0
    oversized_lines: int = 0
    undecodable_lines: int = 0


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
    _fh: object | None = None
    _inode: int | None = None
    _offset: int = 0
    _partial: bytes = b""
    _skip_rest_of_line: bool = False

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def _open(self, at_end: bool) -> bool:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - kept open across calls
        except OSError:
            return False
        st = os.fstat(fh.fileno())
        self._fh, self._inode = fh, st.st_ino
        self._offset = st.st_size if at_end else 0
        fh.seek(self._offset)
        self._partial = b""
        return True

    def read_lines(self) -> list[str]:
        """All complete lines appended since the last call (decoded UTF-8, newline stripped)."""
        if self._fh is None and not self._open(self.start_at_end):
            return []
        self.start_at_end = False  # only the very first open skips old content
        lines = self._drain()
        try:
            st = os.stat(self.path)
        except OSError:
            return lines  # rotated away, new file not there yet: keep the old handle
        if st.st_ino != self._inode:
            lines += self._drain()  # finish what the old file got before rotation
            self.close()
            self.stats.rotations += 1
            if self._open(False):
                lines += self._drain()
        elif st.st_size < self._offset:
            self.stats.truncations += 1
            log.info("file truncated path=%s", self.path)
            self._fh.seek(0)  # type: ignore[union-attr]
            self._offset, self._partial = 0, b""
            lines += self._drain()
        return lines

    def _drain(self) -> list[str]:
        fh = self._fh
        if fh is None:
            return []
        data = fh.read()  # type: ignore[attr-defined]
        if not data:
            return []
        self._offset += len(data)
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        out: list[str] = []
        for raw in chunks:
            if self._skip_rest_of_line:
                self._skip_rest_of_line = False
                continue
            if len(raw) > self.max_line_bytes:
                self.stats.oversized_lines += 1
                continue
            try:
                out.append(raw.decode("utf-8").rstrip("\r"))
            except UnicodeDecodeError:
                self.stats.undecodable_lines += 1
        if len(self._partial) > self.max_line_bytes:
            self.stats.oversized_lines += 1
            self._partial = b""
            self._skip_rest_of_line = True
        return out

    def close(self) -> None:
        """Close the current file handle."""
        if self._fh is not None:
            self._fh.close()  # type: ignore[attr-defined]
        self._fh = None


class DirectoryTailer:
    """Tails every file matching a glob under a directory, picking up new files as they appear."""

    def __init__(self, directory: Path | str, pattern: str = "*", start_at_end: bool = False) -> None:
        self.directory = Path(directory)
        self.pattern = pattern
        self.start_at_end = start_at_end
        self.tailers: dict[Path, FileTailer] = {}
        self._first_scan = True

    def read_lines(self) -> list[tuple[Path, str]]:
        """New complete lines of every file, as (path, line), files in name order."""
        out: list[tuple[Path, str]] = []
        if self.directory.is_dir():
            for path in sorted(self.directory.glob(self.pattern)):
                if path not in self.tailers and path.is_file():
                    self.tailers[path] = FileTailer(path, start_at_end=self.start_at_end and self._first_scan)
        self._first_scan = False
        for path, tailer in list(self.tailers.items()):
            out += [(path, line) for line in tailer.read_lines()]
            if not path.exists() and tailer._drain() == []:
                tailer.close()
                del self.tailers[path]
        return out

    def close(self) -> None:
        """Close every file."""
        for t in self.tailers.values():
            t.close()
        self.tailers.clear()
