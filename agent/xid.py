"""Xid errors: the catalogue as data, and a parser for NVRM kernel-log lines."""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from c4.agent.nvml import normalize_bus_id

CATALOG_FILE = Path(__file__).parent / "xid_catalog.toml"
MAX_XID_DIGITS = 9  # gpu_events.xid is an INTEGER

#: `NVRM: Xid (PCI:0000:2b:00): 79, pid=..., GPU has fallen off the bus.` and the older form
#: without `PCI:`; a /dev/kmsg record prefix (`6,1234,5678,-;`) or dmesg time stamp may precede it.
XID_LINE = re.compile(
    r"NVRM: Xid \((?:PCI:)?(?P<bus>[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?)\): "
    r"(?P<xid>\d+),\s*(?P<msg>.*)$"
)


@dataclass(frozen=True)
class XidInfo:
    """What an Xid means and what to do about it: NVIDIA's catalogue entry and C4's action."""

    xid: int
    name: str
    category: str
    meaning: str
    action: str
    mnemonic: str = ""
    immediate_action: str = ""  # NVIDIA's "Resolution Bucket (Immediate Action)", e.g. RESTART_APP
    investigatory_action: str = ""  # NVIDIA's "Resolution Bucket (Investigatory Action)"


@functools.cache
def catalog() -> dict[int, XidInfo]:
    """The Xid catalogue from xid_catalog.toml."""
    raw = tomllib.loads(CATALOG_FILE.read_text())["xid"]
    return {
        int(k): XidInfo(
            int(k),
            v["name"],
            v["category"],
            v["meaning"],
            v["action"],
            v.get("mnemonic", ""),
            v.get("immediate_action", ""),
            v.get("investigatory_action", ""),
        )
        for k, v in raw.items()
    }


def describe(xid: int) -> XidInfo:
    """Catalogue entry, or an 'unknown' entry that asks for investigation."""
    return catalog().get(xid) or XidInfo(
        xid, f"Xid {xid}", "unknown", "Not in C4's Xid catalogue.", "investigate"
    )


@dataclass(frozen=True)
class XidLine:
    """One parsed kernel-log Xid."""

    xid: int
    pci_bus_id: str
    message: str


def parse_xid_line(line: str) -> XidLine | None:
    """Parse an NVRM Xid line; None if the line is not one."""
    m = XID_LINE.search(line)
    if not m or len(m["xid"]) > MAX_XID_DIGITS:  # Xids are small numbers: a huge one is not an Xid
        return None
    return XidLine(int(m["xid"]), normalize_bus_id(m["bus"]), m["msg"].strip())


def event_row(
    xid: int,
    source: str,
    message: str,
    pci_bus_id: str = "",
    gpu_index: int | None = None,
    gpu_uuid: str = "",
) -> dict:
    """A gpu_events row for one Xid, with the catalogue's meaning and action."""
    info = describe(xid)
    return {
        "kind": "xid",
        "source": source,
        "xid": xid,
        "xid_name": info.name,
        "category": info.category,
        "meaning": info.meaning,
        "action": info.action,
        "nvidia_immediate_action": info.immediate_action,
        "nvidia_investigatory_action": info.investigatory_action,
        "message": message,
        "pci_bus_id": pci_bus_id,
        "gpu_index": gpu_index,
        "gpu_uuid": gpu_uuid,
    }


def gpu_lost_row(
    source: str, message: str, pci_bus_id: str = "", gpu_index: int | None = None, gpu_uuid: str = ""
) -> dict:
    """A gpu_events row for a GPU that fell off the bus without an Xid number (the catalogue's entry for 79)."""
    row = event_row(79, source, message, pci_bus_id, gpu_index, gpu_uuid)
    row.update(kind="gpu_lost", xid=None)
    return row
