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
from scapy.layers.l2 import Ether
from scapy.utils import PcapReader

from c4.agent.lldp_json import neighbor_kind, neighbor_port

log = logging.getLogger("c4.agent.lldp_frame")

ETH_P_LLDP = 0x88CC
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


def pcap_rows(path: str, interface: str, local_system: str, skipped: Counter) -> list[dict[str, Any]]:
    """Rows from every LLDP frame of a pcap file (one per frame); a frame that does not decode is counted."""
    rows = []
    with PcapReader(path) as reader:
        for pkt in reader:
            if pkt.haslayer(Ether) and pkt[Ether].type != ETH_P_LLDP:
                continue  # not LLDP: not ours to count
            try:
                row = frame_row(pkt, interface, local_system)
            except Exception:  # noqa: BLE001 - scapy raises many kinds on a truncated frame
                row = None
            if row is None:
                skipped["frame_undecodable"] += 1
            else:
                rows.append(row)
    return rows


class FrameListener:
    """Reads LLDP frames from interfaces on background threads; ``rows()`` gives each port's newest live neighbour."""

    def __init__(self, interfaces: list[str], local_system: str, recv_timeout_s: float = 1.0) -> None:
        self.interfaces = list(interfaces)
        self.local_system = local_system
        self.recv_timeout_s = recv_timeout_s
        self.skipped_by_reason: Counter = Counter()
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
                try:
                    row = frame_row(frame, interface, self.local_system)
                except Exception:  # noqa: BLE001 - scapy raises many kinds on a malformed frame
                    row = None
                with self._lock:
                    if row is None:
                        self.skipped_by_reason["frame_undecodable"] += 1
                    else:
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
