"""NCCL RAS: communicator and rank health from the RAS service (default localhost:28028) or a report file.

Protocol (NCCL's ncclras client, src/ras/client.cc): send ``CLIENT PROTOCOL <v>``, read ``SERVER PROTOCOL
<v>``, ``TIMEOUT <s>`` (answered ``OK``), then ``SET FORMAT json`` (NCCL >= 2.28.7 answers ``OK``; 2.24 .. 2.28.3 answer ``ERROR: Unknown
command``, and the text report is read instead) and ``VERBOSE STATUS``; the server writes the report and
closes the connection. A RAS that is not listening is "no data", logged once per state change.

With ``path`` the sampler reads a report a job or cron wrote instead (``ncclras -v [-f json] > FILE``),
again each time the file changes; a file that is not there yet is waited for, never given up on.
"""

from __future__ import annotations

import json
import logging
import socket
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

from c4.agent.ras_json import repair_2_28, report_rows
from c4.agent.ras_text import text_rows
from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows
from c4.options import Meta
from c4.options import Options as SectionOptions

log = logging.getLogger("c4.agent.nccl_ras")
CLIENT_PROTOCOL = 2
MAX_REPORT_BYTES = 16 << 20


class RasError(RuntimeError):
    """The RAS service answered something unexpected."""


def _command(f, line: str) -> str:
    """Send one protocol line, return the one-line answer."""
    f.write(f"{line}\n".encode())
    f.flush()
    return f.readline().decode(errors="replace").strip()


def query_ras(address: str, timeout_s: float, fmt: str = "auto", collect_timeout_s: int = 3) -> str:
    """One VERBOSE STATUS report as text: JSON when the server can write it (raises OSError when RAS is not there).

    ``TIMEOUT <collect_timeout_s>`` bounds how long RAS waits for an unresponsive peer (NCCL's default is
    5 s per leg); the report is awaited for twice that plus ``timeout_s``, so a job with a hung process
    still yields its INCOMPLETE report instead of a socket timeout."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host or "localhost", int(port)), timeout=timeout_s) as sock:
        f = sock.makefile("rwb")
        hello = _command(f, f"CLIENT PROTOCOL {CLIENT_PROTOCOL}")
        if not hello.startswith("SERVER PROTOCOL"):
            raise RasError(f"unexpected RAS greeting {hello!r}")
        ok = _command(f, f"TIMEOUT {collect_timeout_s}")
        if ok != "OK":
            raise RasError(f"RAS refused TIMEOUT {collect_timeout_s}: {ok!r}")
        if fmt != "text":
            ok = _command(f, "SET FORMAT json")
            if ok != "OK" and (fmt == "json" or not ok.startswith("ERROR")):
                raise RasError(f"RAS refused JSON format ({ok!r}): NCCL older than 2.28.7?")
        sock.settimeout(2 * collect_timeout_s + timeout_s)
        f.write(b"VERBOSE STATUS\n")
        f.flush()
        return f.read(MAX_REPORT_BYTES).decode("utf-8", "replace")


def parse_report(text: str, skipped: Counter) -> list[dict[str, Any]]:
    """nccl_ras_status rows from one report, JSON or text; what cannot be read is counted by reason."""
    body = text.strip()
    if not body:
        skipped["report_empty"] += 1
        return []
    if not body.startswith("{"):
        return text_rows(text, skipped)
    body, _ = repair_2_28(body)
    try:
        report = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, a torn file, a 5000-digit number, nesting too deep
        skipped["report_not_json"] += 1
        return []
    if not isinstance(report, dict):
        skipped["report_not_json"] += 1
        return []
    if "event" in report and "communicators" not in report:
        skipped["monitor_event"] += 1  # MONITOR mode output: process events, no communicators
        return []
    return report_rows(report, skipped)


class RasSampler:
    """Polls NCCL RAS (or re-reads a report file) every few ticks; absence of RAS is not an error."""

    name = "nccl_ras"
    tables = ("nccl_ras_status",)

    class Options(SectionOptions):
        """Config keys of ``[agent.samplers.nccl_ras]``."""

        address: str = "localhost:28028"
        path: Path | None = None  # a report file (ncclras output) to read instead of the service
        format: Literal["auto", "json", "text"] = "auto"  # what to ask the service for
        timeout_s: float = 2.0
        collect_timeout_s: Annotated[int, Meta(ge=1)] = (
            3  # TIMEOUT sent to RAS: its wait for unresponsive peers
        )
        poll_every_ticks: int = 10

    def __init__(
        self,
        address: str = "localhost:28028",
        timeout_s: float = 2.0,
        poll_every_ticks: int = 10,
        path: Path | None = None,
        fmt: str = "auto",
        collect_timeout_s: int = 3,
    ) -> None:
        self.address = address
        self.path = Path(path) if path else None
        self.format = fmt
        self.timeout_s = timeout_s
        self.collect_timeout_s = collect_timeout_s
        self.poll_every_ticks = max(1, poll_every_ticks)
        self._ticks = 0
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the report file last read
        self.available: bool | None = None
        self.errors = 0
        self.skipped_by_reason: Counter = Counter()

    @property
    def records_skipped(self) -> int:
        """Reports, communicators, ranks and text lines that could not be read."""
        return sum(self.skipped_by_reason.values())

    @classmethod
    def from_options(cls, opts: RasSampler.Options, ctx: SamplerContext) -> RasSampler:
        """Build from validated options."""
        return cls(
            opts.address,
            opts.timeout_s,
            opts.poll_every_ticks,
            opts.path,
            opts.format,
            opts.collect_timeout_s,
        )

    def probe(self) -> None:
        """Nothing to check up front: RAS (and its report file) comes and goes with the training job."""

    def _state(self, up: bool, reason: object = "") -> None:
        if up != self.available:  # log state changes, not every poll
            where = f"path={self.path}" if self.path else f"address={self.address}"
            if up:
                log.info("NCCL RAS report readable %s", where)
            else:
                log.info("NCCL RAS not reachable, no data %s reason=%s", where, reason)
        self.available = up

    def _read_file(self) -> str | None:
        assert self.path is not None
        try:
            st = self.path.stat()
            if (st.st_mtime_ns, st.st_size) == self._seen:
                return None
            with open(self.path, "rb") as f:
                text = f.read(MAX_REPORT_BYTES).decode("utf-8", "replace")
        except OSError as exc:
            self._state(False, exc)
            return None
        self._seen = (st.st_mtime_ns, st.st_size)
        return text

    def sample(self, now_ns: int) -> Rows:
        """A status report every poll_every_ticks ticks; nothing when RAS (or its file) is not there."""
        tick, self._ticks = self._ticks, self._ticks + 1
        if tick % self.poll_every_ticks:
            return {}
        if self.path is not None:
            text = self._read_file()
            if text is None:
                return {}
        else:
            try:
                text = query_ras(self.address, self.timeout_s, self.format, self.collect_timeout_s)
            except (OSError, RasError) as exc:
                self._state(False, exc)
                self.errors += 1
                return {}
        self._state(True)
        skipped: Counter = Counter()
        rows = parse_report(text, skipped)
        if skipped:
            self.skipped_by_reason.update(skipped)
            log.warning(
                "RAS report parts skipped reasons=%s skipped_total=%d", dict(skipped), self.records_skipped
            )
        return {"nccl_ras_status": rows}

    def close(self) -> None:
        """Nothing held open between polls."""
