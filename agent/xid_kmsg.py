"""Xid errors from the kernel log (/dev/kmsg or a log file): the ones NVML cannot report (79, 119, 120)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows, SourceUnavailable
from c4.agent.tail import DEFAULT_MAX_BYTES_PER_TICK, FileTailer
from c4.agent.xid import event_row, parse_xid_line

log = logging.getLogger("c4.agent.xid_kmsg")


class KmsgReader:
    """Non-blocking reader of /dev/kmsg records (one record per read), starting at the end."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)  # only what happens from now on
        self.overruns = 0

    def read_lines(self, max_bytes: int = DEFAULT_MAX_BYTES_PER_TICK) -> list[str]:
        """Records available now, at most ``max_bytes`` of them (message text after the
        `prio,seq,ts,flags;` prefix, UTF-8 with replacement)."""
        out = []
        left = max_bytes
        while left > 0:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # the ring buffer overwrote records we had not read
                    self.overruns += 1
                    continue
                raise
            if not rec:
                break
            left -= len(rec)
            text = rec.decode("utf-8", "replace")
            out.append(text.split(";", 1)[1].split("\n", 1)[0] if ";" in text else text.strip())
        return out

    def close(self) -> None:
        """Close the device."""
        os.close(self.fd)


class KmsgXidSampler:
    """Parses `NVRM: Xid (PCI:...): N, ...` lines into gpu_events rows; other lines are ignored."""

    name = "xid_kmsg"
    tables = ("gpu_events",)

    class Options(BaseModel):
        """Config keys of ``[agent.samplers.xid_kmsg]``."""

        model_config = ConfigDict(extra="forbid")
        kmsg_path: Path = Path("/dev/kmsg")  # or a text log file (e.g. a saved dmesg, the twin's log)
        from_start: bool = False  # for a file: read what it already holds, not only new lines
        max_bytes_per_tick: int = Field(DEFAULT_MAX_BYTES_PER_TICK, ge=4096)  # the rest comes next tick

    def __init__(
        self, path: Path, from_start: bool = False, max_bytes_per_tick: int = DEFAULT_MAX_BYTES_PER_TICK
    ) -> None:
        self.path = Path(path)
        self.from_start = from_start
        self.max_bytes_per_tick = max_bytes_per_tick
        self.reader: KmsgReader | FileTailer | None = None
        self.xid_lines = 0
        self.malformed = 0

    @property
    def records_skipped(self) -> int:
        """Xid lines that could not be parsed."""
        return self.malformed

    @classmethod
    def from_options(cls, opts: KmsgXidSampler.Options, ctx: SamplerContext) -> KmsgXidSampler:
        """Build from validated options."""
        return cls(opts.kmsg_path, opts.from_start, opts.max_bytes_per_tick)

    def probe(self) -> None:
        """Open the kernel log; SourceUnavailable if it is missing or unreadable."""
        try:
            if self.path.is_char_device():
                self.reader = KmsgReader(self.path)
            elif self.path.is_file():
                self.reader = FileTailer(self.path, start_at_end=not self.from_start)
            elif self.path.exists():
                raise SourceUnavailable(f"{self.path} is neither a character device nor a regular file")
            else:
                raise SourceUnavailable(f"{self.path} does not exist")
        except PermissionError as exc:
            raise SourceUnavailable(f"{self.path}: {exc.strerror} (the agent needs read access)") from None

    def sample(self, now_ns: int) -> Rows:
        """New Xid lines as event rows."""
        assert self.reader is not None
        rows = []
        for line in self.reader.read_lines(self.max_bytes_per_tick):
            if "NVRM: Xid" not in line:
                continue
            try:  # one bad line is skipped alone, whatever it raises
                parsed = parse_xid_line(line)
                row = (
                    None
                    if parsed is None
                    else event_row(parsed.xid, "kmsg", parsed.message, parsed.pci_bus_id)
                )
            except Exception as exc:
                parsed, row = None, None
                line = f"{line[:200]} ({type(exc).__name__}: {exc})"
            if row is None:
                self.malformed += 1
                if self.malformed in (1, 10, 100, 1000) or self.malformed % 10000 == 0:
                    log.warning(
                        "unparsable Xid line skipped line=%r malformed_total=%d", line[:300], self.malformed
                    )
                continue
            self.xid_lines += 1
            rows.append(row)
        return {"gpu_events": rows}

    def close(self) -> None:
        """Close the log."""
        if self.reader is not None:
            self.reader.close()
