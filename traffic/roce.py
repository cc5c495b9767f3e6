"""RoCEv2 packets with scapy: a plan's traffic as RDMA WRITEs (BTH + RETH, correct ICRC), back from pcap, and probes."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from scapy.contrib.roce import BTH
from scapy.fields import IntField, LongField
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, bind_layers
from scapy.utils import PcapWriter, rdpcap

from c4.traffic.hashing import ROCEV2_DPORT, FiveTuple
from c4.traffic.planner import Plan
from c4.traffic.topology import Topology

# RC opcodes (IBTA): RDMA WRITE First / Middle / Last / Only, SEND Only
WRITE_FIRST, WRITE_MIDDLE, WRITE_LAST, WRITE_ONLY, SEND_ONLY = 0x06, 0x07, 0x08, 0x0A, 0x04


class RETH(Packet):
    """RDMA Extended Transport Header: virtual address, R_Key, DMA length."""

    name = "RETH"
    fields_desc = [LongField("va", 0), IntField("rkey", 0), IntField("dlen", 0)]


bind_layers(BTH, RETH, opcode=WRITE_FIRST)
bind_layers(BTH, RETH, opcode=WRITE_ONLY)


def write_packets(
    src_ip: str, dst_ip: str, sport: int, qpn: int, total_bytes: int, mtu: int = 4096
) -> list[Packet]:
    """One RDMA WRITE of total_bytes as First/Middle.../Last (or Only) packets of up to mtu payload bytes."""
    n = max(1, -(-total_bytes // mtu))
    out = []
    for i in range(n):
        size = min(mtu, total_bytes - i * mtu)
        op = WRITE_ONLY if n == 1 else WRITE_FIRST if i == 0 else WRITE_LAST if i == n - 1 else WRITE_MIDDLE
        bth = BTH(opcode=op, dqpn=qpn, psn=i & 0xFFFFFF, ackreq=int(i == n - 1))
        if op in (WRITE_FIRST, WRITE_ONLY):
            bth = bth / RETH(va=0x7F0000000000, rkey=0x1234, dlen=total_bytes)
        pkt = (
            Ether()
            / IP(src=src_ip, dst=dst_ip)
            / UDP(sport=sport, dport=ROCEV2_DPORT)
            / bth
            / (b"\x00" * size)
        )
        out.append(pkt)
    return out


def plan_to_pcap(
    plan: Plan, path: Path | str, bytes_per_unit: float = 1 << 20, mtu: int = 4096
) -> dict[tuple, int]:
    """Write every piece as one RDMA WRITE of piece_bytes / bytes_per_unit payload bytes; returns bytes per QP key."""
    written: dict[tuple, int] = {}
    with PcapWriter(str(path), sync=True) as w:
        for i, p in enumerate(plan.pieces):
            size = max(1, round(p.bytes / bytes_per_unit))
            qpn = 0x100 + i
            for pkt in write_packets(p.src_port.ip, p.dst_port.ip, p.sport, qpn, size, mtu):
                w.write(pkt)
            written[(p.src_port.ip, p.dst_port.ip, p.sport, qpn)] = size
    return written


class IcrcError(ValueError):
    """A packet's ICRC does not match its contents."""


def pcap_to_qps(path: Path | str, check_icrc: bool = True) -> dict[tuple, int]:
    """Payload bytes per (src_ip, dst_ip, sport, dest QP) from a RoCEv2 pcap; verifies every ICRC."""
    out: dict[tuple, int] = defaultdict(int)
    for pkt in rdpcap(str(path)):
        if BTH not in pkt:
            continue
        bth = pkt[BTH]
        if check_icrc:
            raw_icrc = bytes(pkt)[-4:]
            if bth.compute_icrc(None) != raw_icrc:
                raise IcrcError(f"bad ICRC on {pkt[IP].src}->{pkt[IP].dst} psn {bth.psn}")
        payload = bytes(bth.payload)
        if RETH in pkt:
            payload = bytes(pkt[RETH].payload)
        out[(pkt[IP].src, pkt[IP].dst, pkt[UDP].sport, bth.dqpn)] += len(payload)  # the ICRC is a BTH field
    return dict(out)


def replay(topo: Topology, qps: dict[tuple, int], hasher_for) -> dict[int, int]:
    """Route each QP's bytes through the switches' hashes; bytes per link id."""
    port_of = {p.ip: p for p in topo.ports()}
    load: dict[int, int] = defaultdict(int)
    for (src_ip, dst_ip, sport, _qpn), size in qps.items():
        src, dst = port_of[src_ip], port_of[dst_ip]
        t = FiveTuple(src_ip, dst_ip, sport)
        nodes = [src.name, src.leaf]
        cur = src.leaf
        while cur != dst.leaf:
            nexts = sorted(topo.next_hops(cur, dst.leaf))
            cur = nexts[hasher_for(cur).pick(t, len(nexts))]
            nodes.append(cur)
        nodes.append(dst.name)
        for a, b in zip(nodes, nodes[1:], strict=False):
            load[topo.link(a, b).id] += size
    return dict(load)


def probe(src_ip: str, dst_ip: str, sport: int, ttl: int = 64) -> Packet:
    """A RoCEv2 SEND probe for source-port -> path discovery (sent with rising TTL, traceroute style)."""
    return (
        Ether()
        / IP(src=src_ip, dst=dst_ip, ttl=ttl)
        / UDP(sport=sport, dport=ROCEV2_DPORT)
        / BTH(opcode=SEND_ONLY, dqpn=1, psn=0)
        / sport.to_bytes(2, "big")
    )
