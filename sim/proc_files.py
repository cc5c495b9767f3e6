"""A simulated node's /proc/stat, /proc/meminfo and /proc/loadavg in the kernel's formats, advanced tick by tick.

What the production host sampler (``c4.agent.host``) reads. ``/proc/stat``'s CPU lines follow the kernel's
``Documentation/filesystems/proc.rst`` (section 1.8): ``cpu`` then ``cpuN``, ten columns of USER_HZ ticks
(user nice system idle iowait irq softirq steal guest guest_nice); the aggregate line is the sum of the
CPU lines. The host's load is a share of CPU time per column, set per tick (``HOST_LOADS``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Ticks per second of /proc/stat's CPU columns (USER_HZ, 100 on every Linux architecture C4 runs on).
USER_HZ = 100
#: /proc/stat's CPU-time columns, in the kernel's order.
COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
#: Share of CPU time per column (idle takes the rest) for each state a simulated host can be in:
#: ``calm`` a training host feeding its GPUs (rank main threads, a few loader workers), ``busy`` one whose
#: data loader, GC or Python overhead saturates it, ``iowait`` one whose ranks block on storage reads/writes.
HOST_LOADS: dict[str, dict[str, float]] = {
    "calm": {"user": 0.30, "system": 0.04, "softirq": 0.01, "iowait": 0.005},
    "busy": {"user": 0.86, "system": 0.09, "softirq": 0.02, "iowait": 0.005},
    "iowait": {"user": 0.06, "system": 0.05, "softirq": 0.01, "iowait": 0.55},
}
MEM_TOTAL_KB = 2 << 30  # 2 TiB, an 8-GPU training node
MEM_AVAILABLE_KB = 1 << 30


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class ProcWriter:
    """One node's /proc files: CPU-time counters that only grow, written after each tick."""

    def __init__(self, root: Path, cpus: int, boot_s: float) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cpus = cpus
        self.boot_s = int(boot_s)
        self.ticks = [[0] * len(COLUMNS) for _ in range(cpus)]  # per CPU, per column
        self._carry = [0.0] * len(COLUMNS)  # fractions of a tick not yet written, per column (per CPU)
        self.state = "calm"
        self.write()

    def advance(self, seconds: float, state: str) -> None:
        """Every CPU spends ``seconds`` in ``state`` (a key of ``HOST_LOADS``)."""
        shares = HOST_LOADS[state]
        self.state = state
        idle = max(0.0, 1.0 - sum(shares.values()))
        for i, col in enumerate(COLUMNS):
            exact = seconds * USER_HZ * (idle if col == "idle" else shares.get(col, 0.0)) + self._carry[i]
            whole = int(exact)
            self._carry[i] = exact - whole
            for cpu in self.ticks:
                cpu[i] += whole

    def write(self) -> None:
        """Write stat, meminfo and loadavg as the kernel lays them out."""
        total = [sum(cpu[i] for cpu in self.ticks) for i in range(len(COLUMNS))]
        lines = ["cpu  " + " ".join(map(str, total))]
        lines += [f"cpu{n} " + " ".join(map(str, cpu)) for n, cpu in enumerate(self.ticks)]
        running = self.cpus if self.state == "busy" else max(1, self.cpus // 4)
        blocked = self.cpus // 2 if self.state == "iowait" else 0
        lines += [
            f"ctxt {sum(total) * 40}",
            f"btime {self.boot_s}",
            f"processes {10_000 + sum(total) // 100}",
            f"procs_running {running}",
            f"procs_blocked {blocked}",
        ]
        _atomic_write(self.root / "stat", "\n".join(lines) + "\n")
        _atomic_write(
            self.root / "meminfo",
            f"MemTotal:       {MEM_TOTAL_KB} kB\nMemFree:        {MEM_AVAILABLE_KB // 2} kB\n"
            f"MemAvailable:   {MEM_AVAILABLE_KB} kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n",
        )
        load = running + blocked  # Linux's load average counts tasks in D state too
        _atomic_write(self.root / "loadavg", f"{load:.2f} {load:.2f} {load:.2f} {running}/2048 4242\n")
