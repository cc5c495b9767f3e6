"""LLDP neighbours of each NIC: from lldpd (``lldpcli -f json show neighbors details``, or a saved copy),
or, where lldpd is absent, from the LLDP frames the switches send (raw socket, background threads).

``source = "auto"`` asks lldpd and falls back to frames when ``lldpcli`` is missing or cannot reach
its daemon (logged once). lldpd and the frame reader both see what the switch announces: chassis,
system name, port, management address, TTL; the collector assembles the fabric from these rows.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

from c4.agent.lldp_frame import FrameListener, pcap_rows
from c4.agent.lldp_json import neighbor_rows
from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows, SourceUnavailable
from c4.options import Meta, field
from c4.options import Options as SectionOptions

log = logging.getLogger("c4.agent.lldp")
#: lldpd's neighbour report as JSON.
LLDPCLI = ["lldpcli", "-f", "json", "show", "neighbors", "details"]
MAX_REPORT_BYTES = 16 << 20
#: Interfaces never worth listening on for LLDP.
SKIP_INTERFACES = frozenset({"lo", "bonding_masters"})


def read_changed(path: Path, seen: tuple[int, int] | None) -> tuple[bytes | None, tuple[int, int] | None]:
    """The file's bytes when it changed since ``seen`` ((mtime_ns, size)), else None; raises OSError.

    At most MAX_REPORT_BYTES + 1 bytes are read: more than MAX_REPORT_BYTES means the file is too large.
    """
    st = path.stat()
    key = (st.st_mtime_ns, st.st_size)
    if key == seen:
        return None, seen
    with open(path, "rb") as f:
        return f.read(MAX_REPORT_BYTES + 1), key


def too_large(data: bytes, skipped: Counter) -> bool:
    """Whether a report is over MAX_REPORT_BYTES (counted as report_too_large)."""
    if len(data) > MAX_REPORT_BYTES:
        skipped["report_too_large"] += 1
        return True
    return False


def run_command(argv: list[str], timeout_s: float) -> bytes:
    """A command's stdout (at most MAX_REPORT_BYTES + 1 bytes); raises OSError when it cannot run, fails or times out."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"{argv[0]} timed out after {timeout_s} s") from exc
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        raise OSError(f"{argv[0]} exited {done.returncode}: {err[-1] if err else ''}")
    return done.stdout[: MAX_REPORT_BYTES + 1]


class LldpSampler:
    """LLDP neighbours per interface into fabric_neighbors, every poll_every_ticks ticks."""

    name = "lldp"
    tables = ("fabric_neighbors",)

    class Options(SectionOptions):
        """Config keys of ``[agent.samplers.lldp]``."""

        source: Literal["auto", "lldpd", "frames"] = "auto"
        command: list[str] = field(default_factory=lambda: list(LLDPCLI))  # e.g. add "-u", SOCKET
        path: Path | None = None  # a saved `lldpcli -f json show neighbors details` (read when it changes)
        # saved reports of other systems (switches): <system name>.json each, collected by the operator's tooling
        reports_dir: Path | None = None
        pcap: Path | None = None  # frames: a capture to read instead of the live interfaces
        interfaces: list[str] = field(default_factory=list)  # frames: where to listen (default: all but lo)
        sysfs_root: Path = Path("/sys")
        local_system: str = ""  # this system's name in the fabric (default: the agent's node)
        timeout_s: Annotated[float, Meta(gt=0)] = 5.0
        poll_every_ticks: Annotated[int, Meta(ge=1)] = 10

    def __init__(self, opts: LldpSampler.Options, node: str) -> None:
        self.opts = opts
        self.local_system = opts.local_system or node
        self.files_only = bool(opts.path or opts.reports_dir)
        self.mode = "lldpd" if self.files_only else ("frames" if opts.pcap else opts.source)
        self.listener: FrameListener | None = None
        self._seen: dict[Path, tuple[int, int] | None] = {}
        self._cache: dict[
            Path, list[dict[str, Any]]
        ] = {}  # each file's rows, sent every poll until it changes
        self._ticks = 0
        self._own_skips: Counter = Counter()
        self._own_amends: Counter = Counter()
        self.errors = 0
        self._failing = ""

    @classmethod
    def from_options(cls, opts: LldpSampler.Options, ctx: SamplerContext) -> LldpSampler:
        """Build from validated options."""
        return cls(opts, ctx.node)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        """Reports, neighbours and frames that could not be read, per reason."""
        out = Counter(self._own_skips)
        if self.listener is not None:
            out.update(self.listener.skipped_by_reason)
        return dict(out)

    @property
    def amended_by_reason(self) -> dict[str, int]:
        """Neighbours kept with their descriptive text made safe (neighbor_guard), per reason."""
        out = Counter(self._own_amends)
        if self.listener is not None:
            out.update(self.listener.amended_by_reason)
        return dict(out)

    @property
    def source_error(self) -> str:
        """Why a file configured as the source (path, reports_dir's files, pcap) cannot be read now, else ''."""
        return self._failing if (self.files_only or self.opts.pcap) else ""

    @property
    def records_skipped(self) -> int:
        """Their sum."""
        return sum(self.skipped_by_reason.values())

    def _interfaces(self) -> list[str]:
        if self.opts.interfaces:
            return list(self.opts.interfaces)
        net = self.opts.sysfs_root / "class" / "net"
        return sorted(p.name for p in net.iterdir() if p.name not in SKIP_INTERFACES) if net.is_dir() else []

    def _start_frames(self) -> None:
        """Listen for frames on the interfaces (raises SourceUnavailable when none can be opened)."""
        interfaces = self._interfaces()
        if not interfaces:
            raise SourceUnavailable("no network interface to read LLDP frames from")
        listener = FrameListener(interfaces, self.local_system)
        try:
            listener.start()
        except OSError as exc:
            listener.close()
            raise SourceUnavailable(f"cannot read LLDP frames on {interfaces}: {exc}") from exc
        self.listener, self.mode = listener, "frames"
        log.info("LLDP from frames interfaces=%s", ",".join(interfaces))

    def probe(self) -> None:
        """Pick the source: the file, lldpd when lldpcli exists, else live frames."""
        if self.files_only or self.opts.pcap:
            return
        if self.mode in ("auto", "lldpd") and shutil.which(self.opts.command[0]):
            self.mode = "lldpd" if self.opts.source == "lldpd" else "auto"
            return
        if self.mode == "lldpd":
            raise SourceUnavailable(f"{self.opts.command[0]} not found (install lldpd)")
        self._start_frames()

    def _state(self, error: str) -> None:
        if error != self._failing:
            if error:
                log.warning("LLDP source not readable mode=%s error=%s", self.mode, error)
            else:
                log.info("LLDP source readable again mode=%s", self.mode)
        self._failing = error

    def _files(self) -> dict[Path, str]:
        """Saved reports to read: file -> the system whose neighbours it lists."""
        files = {self.opts.path: self.local_system} if self.opts.path else {}
        if self.opts.reports_dir is not None and self.opts.reports_dir.is_dir():
            files.update({p: p.stem for p in sorted(self.opts.reports_dir.glob("*.json"))})
        return files

    def _cached(self, path: Path, parse) -> list[dict[str, Any]]:
        """The file's rows: parsed again when it changed, else the cached ones; none when it cannot be read."""
        try:
            data, self._seen[path] = read_changed(path, self._seen.get(path))
            if data is not None:
                self._cache[path] = parse(data)
        except OSError as exc:
            self.errors += 1
            self._state(str(exc))
            self._cache.pop(path, None)
            self._seen.pop(path, None)
            return []
        self._state("")
        return self._cache.get(path, [])

    def _from_files(self) -> list[dict[str, Any]]:
        files = self._files()
        for gone in set(self._cache) - set(files):
            self._cache.pop(gone)
            self._seen.pop(gone, None)
        rows: list[dict[str, Any]] = []
        for path, system in files.items():
            rows += self._cached(path, lambda data, system=system: self._report_rows(data, system))
        return rows

    def _report_rows(self, data: bytes, system: str) -> list[dict[str, Any]]:
        """Rows of one lldpcli JSON report of ``system``; none (counted) when it is too large."""
        if too_large(data, self._own_skips):
            return []
        return neighbor_rows(data.decode("utf-8", "replace"), system, self._own_skips, self._own_amends)

    def _from_lldpd(self) -> list[dict[str, Any]] | None:
        try:
            text = run_command(self.opts.command, self.opts.timeout_s)
        except OSError as exc:
            self.errors += 1
            self._state(str(exc))
            if self.mode == "auto":  # lldpd is not running here: read the frames ourselves
                log.info("lldpd not answering, reading LLDP frames instead error=%s", exc)
                try:
                    self._start_frames()
                except SourceUnavailable as frames_exc:
                    log.warning("no LLDP source error=%s", frames_exc)
                    self.mode = "lldpd"
            return None
        self._state("")
        return self._report_rows(text, self.local_system)

    def _from_pcap(self) -> list[dict[str, Any]]:
        assert self.opts.pcap is not None
        interface = self.opts.interfaces[0] if self.opts.interfaces else "pcap"
        return self._cached(
            self.opts.pcap,
            lambda _: pcap_rows(
                str(self.opts.pcap), interface, self.local_system, self._own_skips, self._own_amends
            ),
        )

    def sample(self, now_ns: int) -> Rows:
        """Every neighbour seen now, every poll_every_ticks ticks (a saved report's, until it changes or goes)."""
        tick, self._ticks = self._ticks, self._ticks + 1
        if tick % self.opts.poll_every_ticks:
            return {}
        if self.opts.pcap:
            rows = self._from_pcap()
        elif self.files_only:
            rows = self._from_files()
        elif self.listener is not None:
            rows = self.listener.rows()
        else:
            rows = self._from_lldpd()
        return {"fabric_neighbors": rows} if rows else {}

    def close(self) -> None:
        """Stop the frame reader threads, if any."""
        if self.listener is not None:
            self.listener.close()
