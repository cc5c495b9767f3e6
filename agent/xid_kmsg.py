"""Xid errors from the kernel log (/dev/kmsg or a log file): the ones NVML cannot report (79, 119, 120)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows, SourceUnavailable
from c4.agent.tail import FileTailer
from c4.agent.xid import event_row, parse_xid_line

log = logging.getLogger("c4.agent.xid_kmsg")


class KmsgReader:
    """Non-blocking reader of /dev/kmsg records (one record per read), starting at the end."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)  # only what happens from now on
        self.overruns = 0

    def read_lines(self) -> list[str]:
        """Records available now (message text after the `prio,seq,ts,flags;` prefix)."""
        out = []
        while True:
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

    def __init__(self, path: Path, from_start: bool = False) -> None:
        self.path = Path(path)
        self.from_start = from_start
        self.reader: KmsgReader | FileTailer | None = None
        self.xid_lines = 0
        self.malformed = 0

    @classmethod
    def from_options(cls, opts: KmsgXidSampler.Options, ctx: SamplerContext) -> KmsgXidSampler:
        """Build from validated options."""
        return cls(opts.kmsg_path, opts.from_start)

    def probe(self) -> None:
        """Open the kernel log; SourceUnavailable if it is missing or unreadable."""
        try:
            if self.path.is_char_device():
                self.reader = KmsgReader(self.path)
            elif self.path.is_file():
                self.reader = FileTailer(self.path, start_at_end=not self.from_start)
            else:
                raise SourceUnavailable(f"{self.path} does not exist")
        except PermissionError as exc:
            raise SourceUnavailable(f"{self.path}: {exc.strerror} (the agent needs read access)") from None

    def sample(self, now_ns: int) -> Rows:
        """New Xid lines as event rows."""
        assert self.reader is not None
        rows = []
        for line in self.reader.read_lines():
            if "NVRM: Xid" not in line:
                continue
            parsed = parse_xid_line(line)
            if parsed is None:
                self.malformed += 1
                log.warning(
                    "unparsable Xid line skipped line=%r malformed_total=%d", line[:200], self.malformed
                )
                continue
            self.xid_lines += 1
            rows.append(event_row(parsed.xid, "kmsg", parsed.message, parsed.pci_bus_id))
        return {"gpu_events": rows}

    def close(self) -> None:
        """Close the log."""
        if self.reader is not None:
            self.reader.close()
