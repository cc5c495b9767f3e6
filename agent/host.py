"""Host CPU and memory from /proc (root injectable), the spine's reference sampler."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows, SourceUnavailable
from c4.agent.sysfs import HeldFiles
from c4.options import Options as SectionOptions

log = logging.getLogger("c4.agent.host")
PROC_FILE_MAX_BYTES = 4 << 20  # /proc/stat of a many-core host is ~100 KiB


class HostSampler:
    """Reads /proc/stat, /proc/meminfo and /proc/loadavg."""

    name = "host"
    tables = ("host_cpu", "host_memory")

    class Options(SectionOptions):
        """Config keys of ``[agent.samplers.host]``."""

        proc_root: Path = Path("/proc")

    def __init__(self, proc_root: Path | str = "/proc") -> None:
        self.proc_root = Path(proc_root)
        self.records_skipped = 0
        self.skipped_by_reason: dict[str, int] = {}  # stat_line, meminfo_line, loadavg -> lines skipped
        self._warned: set[str] = set()
        self._ticks_per_s = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._files = HeldFiles(max_open=8)  # stat, meminfo, loadavg kept open: one pread each a tick

    @classmethod
    def from_options(cls, opts: HostSampler.Options, ctx: SamplerContext) -> HostSampler:
        """Build from validated options."""
        return cls(opts.proc_root)

    def probe(self) -> None:
        """The proc root must hold a readable stat file."""
        if not (self.proc_root / "stat").is_file():
            raise SourceUnavailable(f"{self.proc_root / 'stat'} not found")

    def _lines(self, name: str) -> list[str]:
        """Lines of one proc file, read without blocking (a FIFO or device there reads as nothing)."""
        data = self._files.read_whole(f"{self.proc_root}/{name}", PROC_FILE_MAX_BYTES)
        if data is None:
            self._warn(
                name, f"proc file unreadable or not a regular file, skipped path={self.proc_root / name}"
            )
            return []
        return data.decode("utf-8", "replace").strip().splitlines()

    def _skip(self, reason: str) -> None:
        """Count one unreadable line, in total and per reason."""
        self.records_skipped += 1
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def sample(self, now_ns: int) -> Rows:
        """One row per CPU plus one memory row; a line that does not parse is skipped and counted."""
        self._files.new_pass()
        cpu_rows = []
        procs_running = None
        hz = self._ticks_per_s
        for line in self._lines("stat"):
            parts = line.split()
            if not parts:
                continue
            try:
                if parts[0].startswith("cpu"):
                    v = [int(x) for x in parts[1:9]] + [0] * max(0, 8 - len(parts[1:9]))
                    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
                    cpu_rows.append(
                        {
                            "cpu": "all" if parts[0] == "cpu" else parts[0][3:],
                            "user_s": (user + nice) / hz,
                            "system_s": (system + irq + softirq) / hz,
                            "idle_s": idle / hz,
                            "iowait_s": iowait / hz,
                            "steal_s": steal / hz,
                        }
                    )
                elif parts[0] == "procs_running":
                    procs_running = int(parts[1])
            except (ValueError, IndexError, OverflowError):
                self._skip("stat_line")
                self._warn("stat-line", f"unparsable /proc/stat line skipped line={line[:120]!r}")
        mem: dict[str, int] = {}
        for line in self._lines("meminfo"):
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields:
                try:
                    mem[key] = int(fields[0]) * (1024 if len(fields) > 1 and fields[1] == "kB" else 1)
                except ValueError:
                    self._skip("meminfo_line")
                    self._warn("meminfo-line", f"unparsable /proc/meminfo line skipped line={line[:120]!r}")
        load = self._lines("loadavg")
        try:
            load1 = float(load[0].split()[0]) if load else None
        except (ValueError, IndexError):
            load1 = None
            self._skip("loadavg")
        memory_row = {
            "mem_total_bytes": mem.get("MemTotal"),
            "mem_available_bytes": mem.get("MemAvailable"),
            "swap_used_bytes": max(0, mem["SwapTotal"] - mem.get("SwapFree", 0))
            if "SwapTotal" in mem
            else None,
            "load1": load1,
            "procs_running": procs_running,
        }
        return {"host_cpu": cpu_rows, "host_memory": [memory_row]}

    def close(self) -> None:
        """Close the held proc files."""
        self._files.close()
