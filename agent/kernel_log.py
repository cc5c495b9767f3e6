"""Kernel-log lines about NVIDIA GPUs and NVSwitches -> event rows: Xids, SXids, GPUs fallen off the bus.

One parser per log, fed line by line (a /dev/kmsg record holding several lines is split first): it keeps
the little state multi-line messages need. The forms it reads, each seen in real logs (the corpus in
tests/conformance/xid_kmsg/):

- ``NVRM: Xid (PCI:0000:2b:00): 79, pid=..., GPU has fallen off the bus.`` (and ``Xid (0000:2b:00)``)
- ``NVRM: GPU at PCI:0000:07:00: GPU-fb51809b-...``: the GPU's UUID, printed before its Xids
- ``NVRM: GPU 0000:01:00.0: GPU has fallen off the bus.``, ``NVRM: GPU at PCI:0000:65:00: GPU has
  fallen off the bus.`` and the old ``NVRM: GPU at 0000:01:00.0 has fallen off the bus.``: no Xid
- the driver's probe message over two or three lines: ``NVRM: The NVIDIA GPU 0000:b3:00.0`` /
  ``NVRM: (PCI ID: 10de:26b5) installed in this system has`` / ``NVRM: fallen off the bus and is not
  responding to commands.``
- ``nvidia-nvswitch3: SXid (PCI:0000:04:00.0): 22013, Non-fatal, Link 44 Minion Link DLREQ interrupt``,
  followed by ``... 22013, Severity 0 Engine instance 44 ...`` and ``... 22013, Data {...}`` details
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from c4.agent.nvml import normalize_bus_id
from c4.agent.xid import event_row, gpu_lost_row, parse_xid_line

_BUS = r"[0-9a-fA-F]{1,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?"
#: ``NVRM: GPU at PCI:0000:07:00: GPU-fb51809b-350a-99db-67b5-e16fc6d498ab``
UUID_LINE = re.compile(rf"NVRM: GPU at (?:PCI:)?(?P<bus>{_BUS}): (?P<uuid>GPU-[0-9a-fA-F-]{{36}})\s*$")
#: the one-line "fallen off the bus" forms that carry no Xid number
GPU_LOST_LINE = re.compile(rf"NVRM: GPU (?:at )?(?:PCI:)?(?P<bus>{_BUS}):? (?:GPU )?has fallen off the bus")
#: first line of the probe-time form; the PCI ID may be on this line or the next
PROBE_START = re.compile(rf"NVRM: The NVIDIA GPU (?P<bus>{_BUS})\b")
PROBE_END = "fallen off the bus and is not responding to commands"
#: lines after PROBE_START within which PROBE_END must come
PROBE_SPAN_LINES = 2
SXID_LINE = re.compile(
    rf"(?P<dev>nvidia-nvswitch\d+): SXid \((?:PCI:)?(?P<bus>{_BUS})\): (?P<sxid>\d{{1,9}}),\s*(?P<rest>.*)$"
)
SXID_DESCRIPTION = re.compile(r"(?P<sev>Fatal|Non-fatal),\s*(?:Link (?P<link>\d{1,6})\b)?", re.IGNORECASE)
SXID_DETAIL = re.compile(r"(?:Severity \d+ Engine instance|Data \{)")


@dataclass
class KernelLogParser:
    """Turns kernel-log lines into rows per table; lines it cannot read are counted per reason."""

    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    xid_lines: int = 0
    sxid_detail_lines: int = 0
    _uuid_of: dict[str, str] = field(default_factory=dict)  # bus id -> GPU UUID from its header line
    _probe: tuple[str, list[str], int] | None = None  # bus id, lines so far, lines left

    @property
    def records_skipped(self) -> int:
        """Lines that looked like an Xid or SXid but could not be read, all reasons."""
        return sum(self.skipped_by_reason.values())

    def _skip(self, reason: str) -> None:
        self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + 1

    def feed(self, line: str) -> list[tuple[str, dict[str, Any]]]:
        """(table, row) pairs the line completes; usually none."""
        out: list[tuple[str, dict[str, Any]]] = []
        if self._probe is not None:
            bus, lines, left = self._probe
            if "NVRM:" in line:
                lines.append(line.strip())
                if PROBE_END in line:
                    self._probe = None
                    return [("gpu_events", self._gpu_lost(bus, " ".join(lines)))]
                self._probe = (bus, lines, left - 1) if left > 1 else None
            else:
                self._probe = None
        if "NVRM:" in line:
            out += self._nvrm(line)
        elif "SXid" in line:
            out += self._sxid(line)
        return out

    def _nvrm(self, line: str) -> list[tuple[str, dict[str, Any]]]:
        if "NVRM: Xid" in line:
            parsed = parse_xid_line(line)
            if parsed is None:
                self._skip("malformed_xid")
                return []
            self.xid_lines += 1
            row = event_row(parsed.xid, "kmsg", parsed.message, parsed.pci_bus_id)
            row["gpu_uuid"] = self._uuid_of.get(parsed.pci_bus_id, "")
            return [("gpu_events", row)]
        if m := UUID_LINE.search(line):
            self._uuid_of[normalize_bus_id(m["bus"])] = m["uuid"]
            return []
        if m := GPU_LOST_LINE.search(line):
            return [("gpu_events", self._gpu_lost(normalize_bus_id(m["bus"]), line[m.start() :].strip()))]
        if m := PROBE_START.search(line):
            bus = normalize_bus_id(m["bus"])
            if PROBE_END in line:
                return [("gpu_events", self._gpu_lost(bus, line[m.start() :].strip()))]
            self._probe = (bus, [line[m.start() :].strip()], PROBE_SPAN_LINES)
        return []

    def _gpu_lost(self, bus: str, message: str) -> dict[str, Any]:
        return gpu_lost_row("kmsg", message, bus, None, self._uuid_of.get(bus, ""))

    def _sxid(self, line: str) -> list[tuple[str, dict[str, Any]]]:
        m = SXID_LINE.search(line)
        if m is None:
            if "nvswitch" in line:
                self._skip("malformed_sxid")
            return []
        rest = m["rest"].strip()
        if SXID_DETAIL.match(rest):
            self.sxid_detail_lines += 1
            return []
        desc = SXID_DESCRIPTION.match(rest)
        return [
            (
                "nvswitch_events",
                {
                    "kind": "sxid",
                    "source": "kmsg",
                    "switch_device": m["dev"],
                    "pci_bus_id": normalize_bus_id(m["bus"]),
                    "sxid": int(m["sxid"]),
                    "severity": desc["sev"] if desc else "",
                    "link": int(desc["link"]) if desc and desc["link"] else None,
                    "message": rest,
                },
            )
        ]
