"""LLDP frames (ethertype 0x88cc) as fabric_neighbors rows: decoded with scapy's LLDP layer, read from a
pcap file or live from an interface by a background listener (never on the sampling tick).

Subtype names follow lldpd's (IEEE 802.1AB-2009 tables 8-2 and 8-3), so rows from frames and from
lldpd's JSON compare equal.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import threading
import time
from collections import Counter
from typing import Any

from scapy.contrib.lldp import (
    LLDPDU,
    LLDPDUChassisID,
    LLDPDUManagementAddress,
    LLDPDUPortDescription,
    LLDPDUPortID,
    LLDPDUSystemCapabilities,
    LLDPDUSystemDescription,
    LLDPDUSystemName,
    LLDPDUTimeToLive,
)
from scapy.error import Scapy_Exception
from scapy.layers.l2 import Ether
from scapy.utils import RawPcapReader

from c4.agent.lldp_json import neighbor_kind, neighbor_port
from c4.neighbor_guard import checked_rows, guarded

log = logging.getLogger("c4.agent.lldp_frame")

ETH_P_LLDP = 0x88CC
#: 802.1Q, 802.1ad and the older QinQ ethertype: tags an LLDP frame may sit under.
VLAN_TYPES = frozenset({0x8100, 0x88A8, 0x9100})
#: Ethernet linktype of a pcap file (DLT_EN10MB).
DLT_EN10MB = 1
#: Frames of one pcap decoded per poll; later ones are counted (frame_over_limit), not decoded.
MAX_PCAP_FRAMES = 5_000
#: Bytes of one pcap read per poll; the rest is counted once (capture_over_limit) and not read.
MAX_PCAP_BYTES = 16 << 20
#: The nearest-bridge LLDP group address (what lldpd and switches send to).
LLDP_MULTICAST = bytes.fromhex("0180c200000e")
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_MULTICAST = 0

#: Chassis id subtypes (802.1AB table 8-2) as lldpd names them.
CHASSIS_TYPES = {1: "chassis", 2: "ifalias", 3: "port", 4: "mac", 5: "ip", 6: "ifname", 7: "local"}
#: Port id subtypes (802.1AB table 8-3) as lldpd names them.
PORT_TYPES = {1: "ifalias", 2: "port", 3: "mac", 4: "ip", 5: "ifname", 6: "circuit", 7: "local"}
#: System capability bits (802.1AB table 8-4) as lldpd names them.
CAPABILITY_BITS = (
    ("other", "Other"),
    ("repeater", "Repeater"),
    ("mac_bridge", "Bridge"),
    ("wlan_access_point", "Wlan"),
    ("router", "Router"),
    ("telephone", "Tel"),
    ("docsis_cable_device", "Docsis"),
    ("station_only", "Station"),
)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _address(tlv: LLDPDUManagementAddress) -> str:
    """A management address as text (IPv4/IPv6 when its subtype says so)."""
    raw = tlv.management_address
    if isinstance(raw, bytes) and tlv.management_address_subtype in (1, 2):
        try:
            return str(ipaddress.ip_address(raw))
        except ValueError:
            return raw.hex()
    return _text(raw)


def frame_row(frame: bytes | Ether, interface: str, local_system: str) -> dict[str, Any] | None:
    """One fabric_neighbors row from an LLDP frame; None when it is not LLDP or lacks a mandatory TLV."""
    pkt = Ether(frame) if isinstance(frame, bytes) else frame
    if LLDPDU not in pkt:
        return None
    chassis, port, ttl = (
        pkt.getlayer(LLDPDUChassisID),
        pkt.getlayer(LLDPDUPortID),
        pkt.getlayer(LLDPDUTimeToLive),
    )
    if chassis is None or port is None or ttl is None:
        return None
    name, descr, port_descr = (
        pkt.getlayer(LLDPDUSystemName),
        pkt.getlayer(LLDPDUSystemDescription),
        pkt.getlayer(LLDPDUPortDescription),
    )
    caps_tlv, mgmt = pkt.getlayer(LLDPDUSystemCapabilities), pkt.getlayer(LLDPDUManagementAddress)
    caps = []
    if caps_tlv is not None:
        caps = [label for field, label in CAPABILITY_BITS if getattr(caps_tlv, f"{field}_enabled", 0)]
    port_id, port_type = _text(port.id), PORT_TYPES.get(int(port.subtype), str(port.subtype))
    pdescr = _text(port_descr.description) if port_descr is not None else ""
    return {
        "source": "lldp_frame",
        "local_system": local_system,
        "interface": interface,
        "local_id": "",
        "chassis_id": _text(chassis.id),
        "chassis_id_type": CHASSIS_TYPES.get(int(chassis.subtype), str(chassis.subtype)),
        "system_name": _text(name.system_name) if name is not None else "",
        "system_descr": _text(descr.description) if descr is not None else "",
        "port_id": port_id,
        "port_id_type": port_type,
        "port_descr": pdescr,
        "neighbor_port": neighbor_port(port_id, port_type, pdescr),
        "neighbor_kind": neighbor_kind(caps),
        "capabilities": ",".join(caps),
        "mgmt_ip": _address(mgmt) if mgmt is not None else "",
        "ttl_s": int(ttl.ttl),
        "link_rate": "",
    }


class _QuietTruncation(logging.Filter):
    """Drops scapy's own "packet has been truncated" warning: pcap_rows counts those frames instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for scapy's truncation warning."""
        return "packet has been truncated" not in record.getMessage()


logging.getLogger("scapy.runtime").addFilter(_QuietTruncation())


def untagged(frame: bytes) -> bytes:
    """The Ethernet frame with its VLAN tags (802.1Q/802.1ad, at most two) taken out."""
    for _ in range(2):
        if len(frame) < 18 or int.from_bytes(frame[12:14], "big") not in VLAN_TYPES:
            break
        frame = frame[:12] + frame[16:]
    return frame


def _frame_row(data: bytes, interface: str, local_system: str, skipped: Counter) -> dict[str, Any] | None:
    """The row of one Ethernet frame from a capture, or None with the reason counted."""
    frame = untagged(data)
    if len(frame) < 14 or int.from_bytes(frame[12:14], "big") != ETH_P_LLDP:
        skipped["not_lldp"] += 1
        return None
    try:
        row = frame_row(frame, interface, local_system)
    except Exception:  # noqa: BLE001 - scapy raises many kinds on a malformed frame
        row = None
    if row is None:
        skipped["frame_undecodable"] += 1
    return row


def _open_pcap(path: str) -> RawPcapReader:
    """A reader of the capture; OSError naming the file when it is empty or not a pcap/pcapng."""
    try:
        return RawPcapReader(path)
    except Scapy_Exception as exc:
        raise OSError(f"{path}: not a readable pcap file ({exc})") from exc


def _frames(path: str, skipped: Counter):
    """(frame bytes, linktype) of each whole frame of a pcap, within MAX_PCAP_FRAMES and MAX_PCAP_BYTES."""
    frames = read = 0
    with _open_pcap(path) as reader:
        for data, meta in reader:
            read += 16 + int(meta.caplen if meta.caplen < MAX_PCAP_BYTES else len(data))
            if read > MAX_PCAP_BYTES:
                skipped["capture_over_limit"] += 1
                return
            if len(data) < meta.caplen:
                skipped["frame_truncated"] += 1
                continue
            frames += 1
            if frames > MAX_PCAP_FRAMES:
                skipped["frame_over_limit"] += 1
                continue
            yield data, getattr(meta, "linktype", None) or reader.linktype


def pcap_rows(
    path: str, interface: str, local_system: str, skipped: Counter, amended: Counter | None = None
) -> list[dict[str, Any]]:
    """Rows from the LLDP frames of a pcap file (one per local port and neighbour); every frame that
    gives none is counted by reason; OSError naming the file when it is not a readable capture."""
    rows = []
    for data, linktype in _frames(path, skipped):
        if linktype != DLT_EN10MB:
            skipped["linktype_not_ethernet"] += 1
            continue
        row = _frame_row(data, interface, local_system, skipped)
        if row is not None:
            rows.append(row)
    return checked_rows(rows, skipped, Counter() if amended is None else amended)


class FrameListener:
    """Reads LLDP frames from interfaces on background threads; ``rows()`` gives each port's newest live neighbour."""

    def __init__(self, interfaces: list[str], local_system: str, recv_timeout_s: float = 1.0) -> None:
        self.interfaces = list(interfaces)
        self.local_system = local_system
        self.recv_timeout_s = recv_timeout_s
        self.skipped_by_reason: Counter = Counter()
        self.amended_by_reason: Counter = Counter()  # rows kept with their text made safe, per reason
        self._latest: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def open_socket(self, interface: str) -> socket.socket:
        """A raw socket on ``interface`` for ethertype 0x88cc, joined to the LLDP group (raises OSError)."""
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_LLDP))
        sock.bind((interface, ETH_P_LLDP))
        mreq = struct.pack("iHH8s", socket.if_nametoindex(interface), PACKET_MR_MULTICAST, 6, LLDP_MULTICAST)
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.settimeout(self.recv_timeout_s)
        return sock

    def start(self) -> None:
        """Open every interface's socket (raising OSError when one cannot be) and start reading."""
        socks = [(i, self.open_socket(i)) for i in self.interfaces]
        for interface, sock in socks:
            t = threading.Thread(
                target=self._read, args=(interface, sock), name=f"lldp-{interface}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def _read(self, interface: str, sock: socket.socket) -> None:
        with sock:
            while not self._stop.is_set():
                try:
                    frame = sock.recv(65535)
                except TimeoutError:
                    continue
                except OSError as exc:
                    log.warning("LLDP frame read failed interface=%s error=%s", interface, exc)
                    self._stop.wait(self.recv_timeout_s)
                    continue
                skipped, amended = Counter(), Counter()
                row = _frame_row(frame, interface, self.local_system, skipped)
                row = guarded(row, skipped, amended) if row else None
                with self._lock:
                    self.skipped_by_reason.update(skipped)
                    self.amended_by_reason.update(amended)
                    if row is not None:
                        self._latest[interface] = (time.monotonic(), row)

    def rows(self) -> list[dict[str, Any]]:
        """The newest neighbour of each interface whose TTL has not run out."""
        now = time.monotonic()
        with self._lock:
            return [dict(row) for seen, row in self._latest.values() if now - seen <= (row["ttl_s"] or 0)]

    def close(self) -> None:
        """Stop the reader threads."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.recv_timeout_s + 1)
