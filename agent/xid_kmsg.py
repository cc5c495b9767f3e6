"""NVIDIA events from the kernel log (/dev/kmsg or a log file): Xids NVML cannot report (79, 119, 120),
GPUs fallen off the bus without an Xid, and NVSwitch SXids (agent/kernel_log.py reads the lines)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Annotated

from c4.agent.kernel_log import KernelLogParser
from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows, SourceUnavailable
from c4.agent.tail import DEFAULT_MAX_BYTES_PER_TICK, FileTailer
from c4.options import Meta
from c4.options import Options as SectionOptions

log = logging.getLogger("c4.agent.xid_kmsg")


def record_lines(record: bytes) -> list[str]:
    """The message lines of one /dev/kmsg record: the text after the ``prio,seq,ts,flags;`` prefix, up
    to the record's end (its ``KEY=value`` continuation lines are dropped), with the ``\\x0a`` escapes
    of a multi-line printk turned back into lines."""
    text = record.decode("utf-8", "replace")
    message = text.split(";", 1)[1].split("\n", 1)[0] if ";" in text else text.strip()
    return message.replace("\\x0a", "\n").split("\n")


class KmsgReader:
    """Non-blocking reader of /dev/kmsg records (one record per read), starting at the end."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)  # only what happens from now on
        self.overruns = 0

    def read_lines(self, max_bytes: int = DEFAULT_MAX_BYTES_PER_TICK) -> list[str]:
        """Lines of the records available now, at most ``max_bytes`` of them (message text after the
        `prio,seq,ts,flags;` prefix, UTF-8 with replacement; a multi-line record gives several lines)."""
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
            out.extend(record_lines(rec))
        return out

    def close(self) -> None:
        """Close the device."""
        os.close(self.fd)


#: Paths under here are devices: a missing one means this node has none (not waited for).
DEVICE_DIR = Path("/dev")


class KmsgXidSampler:
    """Xid, fallen-off-the-bus and SXid lines into gpu_events and nvswitch_events; other lines ignored.

    A log file that does not exist yet (written by something that starts after the agent) is waited
    for, not given up on: it is read from its start on the first tick it exists.
    """

    name = "xid_kmsg"
    tables = ("gpu_events", "nvswitch_events")

    class Options(SectionOptions):
        """Config keys of ``[agent.samplers.xid_kmsg]``."""

        kmsg_path: Path = Path("/dev/kmsg")  # or a text log file (e.g. a saved dmesg, the twin's log)
        from_start: bool = False  # for a file: read what it already holds, not only new lines
        max_bytes_per_tick: Annotated[int, Meta(ge=4096)] = (
            DEFAULT_MAX_BYTES_PER_TICK  # the rest comes next tick
        )

    def __init__(
        self, path: Path, from_start: bool = False, max_bytes_per_tick: int = DEFAULT_MAX_BYTES_PER_TICK
    ) -> None:
        self.path = Path(path)
        self.from_start = from_start
        self.max_bytes_per_tick = max_bytes_per_tick
        self.reader: KmsgReader | FileTailer | None = None
        self.parser = KernelLogParser()
        self.waiting = False  # a log file that does not exist yet

    @property
    def records_skipped(self) -> int:
        """Lines that looked like an Xid or SXid but could not be read, all reasons."""
        return self.parser.records_skipped

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        """Unreadable lines per reason (malformed_xid, malformed_sxid, error)."""
        return self.parser.skipped_by_reason

    @property
    def malformed(self) -> int:
        """Unreadable lines (the older name of records_skipped)."""
        return self.records_skipped

    @property
    def xid_lines(self) -> int:
        """Xid lines read."""
        return self.parser.xid_lines

    @classmethod
    def from_options(cls, opts: KmsgXidSampler.Options, ctx: SamplerContext) -> KmsgXidSampler:
        """Build from validated options."""
        return cls(opts.kmsg_path, opts.from_start, opts.max_bytes_per_tick)

    def probe(self) -> None:
        """Open the kernel log. SourceUnavailable if it is unreadable, neither a character device nor a
        regular file, or a missing device; a log file that does not exist yet is waited for."""
        try:
            if self.path.is_char_device():
                self.reader = KmsgReader(self.path)
            elif self.path.is_file():
                self.reader = FileTailer(self.path, start_at_end=not self.from_start)
            elif self.path.exists():
                raise SourceUnavailable(f"{self.path} is neither a character device nor a regular file")
            elif self.path.is_relative_to(DEVICE_DIR):
                raise SourceUnavailable(f"{self.path} does not exist")
            else:
                log.info("kernel log not there yet, waiting for it path=%s", self.path)
                self.waiting = True
                self.reader = FileTailer(self.path, start_at_end=False)  # everything it will hold is new
        except PermissionError as exc:
            raise SourceUnavailable(f"{self.path}: {exc.strerror} (the agent needs read access)") from None

    def sample(self, now_ns: int) -> Rows:
        """New Xid, fallen-off-the-bus and SXid lines as event rows."""
        assert self.reader is not None
        out: dict[str, list[dict]] = {table: [] for table in self.tables}
        lines = self.reader.read_lines(self.max_bytes_per_tick)
        if self.waiting and self.path.exists():
            log.info("kernel log appeared path=%s", self.path)
            self.waiting = False
        reasons = self.parser.skipped_by_reason
        for line in lines:
            before = self.records_skipped
            try:  # one bad line is skipped alone, whatever it raises
                for table, row in self.parser.feed(line):
                    out[table].append(row)
            except Exception as exc:
                reasons["error"] = reasons.get("error", 0) + 1
                line = f"{line[:200]} ({type(exc).__name__}: {exc})"
            n = self.records_skipped
            if n != before and (n in (1, 10, 100, 1000) or n % 10000 == 0):
                log.warning(
                    "unparsable Xid line skipped (Xid or SXid) line=%r malformed_total=%d by_reason=%s",
                    line[:300],
                    n,
                    reasons,
                )
        return out

    def close(self) -> None:
        """Close the log."""
        if self.reader is not None:
            self.reader.close()
