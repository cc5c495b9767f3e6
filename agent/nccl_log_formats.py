"""NCCL INFO messages that describe topology, as NCCL 2.9 to 2.30 print them (format strings cited).

- init (src/init.cc): ``comm %p rank %d nranks %d cudaDev %d [nvmlDev %d] busId %lx [commId 0x%llx]
  - Init COMPLETE``; 2.16 adds commId, 2.18 nvmlDev and an ``Init START`` line; 2.21 prefixes the
  call (``ncclCommInitRank``/``ncclCommSplit``); 2.23 any call (``ncclCommInitRankConfig``,
  ``ncclCommInitRankScalable``, ``ncclCommInitAll``, ``ncclCommSplit``, ``ncclCommShrink``,
  ``ncclCommGrow``), and split/shrink lines carry ``parent %p`` with ``splitCount``/``childCount``,
  ``color``, ``key`` instead of a commId (2.21/2.22 split lines carry both); 2.29 prefixes START with
  ``[Rank %d]``.
- ring (src/graph/rings.cc, printed by rank 0 only): ``Channel %02d/%02d : r0 r1 ...``; dumpLine
  prints at most 20 ranks up to 2.22 (MAXWIDTH, no mark) and at most 128 bytes from 2.23 (the cut
  line ends in ``...``, its last number possibly cut too).
- trees (src/init.cc, every rank): ``Trees [c] d0/d1/d2->me->up ...``
- connection (src/transport/{net,p2p,shm}.cc): ``Channel %02d[/%d] : a[x] -> b[y] [send|receive]
  via NET/<plugin>/<dev>[(<proxy>)][/GDRDMA[(PCI)]][/Shared]`` printed by the side in brackets;
  ``via P2P/...``/``via SHM/...`` (no bracket) printed by the sender. ``[x]`` is the bus id in hex
  up to 2.17 and the NVML device from 2.18.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INIT = re.compile(
    r"(?:\[Rank -?\d+\] )?(?:(?P<func>ncclComm\w+) )?comm (?P<ptr>0x[0-9a-fA-F]+|\(nil\)) rank (?P<rank>-?\d+)"
    r" nranks (?P<nranks>\d+) cudaDev (?P<cuda>-?\d+)(?: nvmlDev (?P<nvml>-?\d+))? busId (?P<bus>[0-9a-fA-F]+)"
    r"(?: parent (?P<parent>0x[0-9a-fA-F]+|\(nil\)))?(?: (?:splitCount|childCount) (?P<count>-?\d+))?"
    r"(?: color (?P<color>-?\d+) key (?P<key>-?\d+))?(?: commId (?P<commid>0x[0-9a-fA-F]+))?"
    r" ?- Init (?P<phase>START|COMPLETE)"
)
#: 2.20+: ``comm %p rank %d nRanks %d nNodes %d localRanks %d localRank %d MNNVL %d`` (binds a thread to a comm)
COMM_TOPO = re.compile(r"comm (?P<ptr>0x[0-9a-fA-F]+) rank (?P<rank>\d+) nRanks (?P<nranks>\d+) nNodes \d+")
CONN = re.compile(
    r"Channel (?P<ch>\d+)(?:/(?P<conn>\d+))? : (?P<src>\d+)\[(?P<srcdev>[0-9a-fA-F]+)\] -> "
    r"(?P<dst>\d+)\[(?P<dstdev>[0-9a-fA-F]+)\](?: \[(?P<dir>send|receive)\])? via (?P<via>\S.*?)\s*"
)
NET_VIA = re.compile(
    r"NET/(?P<net>.+)/(?P<nic>\d+)(?:\((?P<proxy>\d+)\))?(?P<gdr>/GDRDMA(?:\(PCI\))?)?(?P<shared>/Shared)?"
)
RING = re.compile(r"Channel (?P<ch>\d+)/(?P<n>\d+) ?:(?P<ranks>(?: +\d+)+)(?P<cut> ?\.\.\.)? *")
TREES = re.compile(r"Trees(?P<body>(?: \[\d+\] -?\d+/-?\d+/-?\d+->-?\d+->-?\d+)+) *")
TREE = re.compile(r"\[(?P<ch>\d+)\] (?P<spec>(?P<down>-?\d+/-?\d+/-?\d+)->(?P<me>-?\d+)->(?P<up>-?\d+))")


@dataclass(frozen=True)
class Init:
    """A communicator's init line (START or COMPLETE)."""

    func: str  # the NCCL call (empty before 2.21)
    ptr: str  # the comm pointer, unique within one process
    rank: int
    n_ranks: int
    cuda_dev: int
    nvml_dev: int | None
    bus_id: str
    comm_id: str  # commId as logged (empty when not logged)
    parent_ptr: str  # the parent comm's pointer (split/shrink, 2.21+)
    split_count: int | None
    color: int | None
    phase: str  # START or COMPLETE


@dataclass(frozen=True)
class Conn:
    """One channel connection, oriented: src sends to dst; ``logger`` is the rank that printed it."""

    channel: int
    src: int
    dst: int
    direction: str  # send or recv, from the logging rank's view
    transport: str  # NET, P2P, SHM or what NCCL named
    net_name: str  # NET plugin name (IB, Socket, AWS Libfabric, IBext_v8 ...), empty otherwise
    nic_index: int | None
    gdr: bool
    via: str
    conn_index: int | None = None  # the ``/%d`` after the channel (2.12+; SHM lines never print it)

    @property
    def logger(self) -> int:
        """The rank whose process printed the line."""
        return self.src if self.direction == "send" else self.dst

    @property
    def peer(self) -> int:
        """The other end, from the logger's view."""
        return self.dst if self.direction == "send" else self.src


def parse_init(msg: str) -> Init | None:
    """An init line, or None."""
    m = INIT.fullmatch(msg)
    if not m:
        return None
    return Init(
        func=m["func"] or "",
        ptr=m["ptr"].lower(),
        rank=int(m["rank"]),
        n_ranks=int(m["nranks"]),
        cuda_dev=int(m["cuda"]),
        nvml_dev=int(m["nvml"]) if m["nvml"] is not None else None,
        bus_id=m["bus"].lower(),
        comm_id=(m["commid"] or "").lower(),
        parent_ptr=(m["parent"] or "").lower(),
        split_count=int(m["count"]) if m["count"] is not None else None,
        color=int(m["color"]) if m["color"] is not None else None,
        phase=m["phase"],
    )


def parse_conn(msg: str) -> Conn | None:
    """A connection line, or None."""
    m = CONN.fullmatch(msg)
    if not m:
        return None
    via = m["via"]
    # [send]/[receive] name the printing side (net.cc); P2P and SHM lines are printed by the sender
    direction = "recv" if m["dir"] == "receive" else "send"
    net = NET_VIA.fullmatch(via)
    if net:
        transport, net_name, nic, gdr = "NET", net["net"], int(net["nic"]), bool(net["gdr"])
    elif via.startswith("NET/"):
        return None
    else:
        head = via.split("/")[0]
        transport = "SHM" if head == "SHM" or via.startswith("direct shared memory") else head
        net_name, nic, gdr = "", None, False
    conn_index = int(m["conn"]) if m["conn"] is not None else None
    return Conn(
        int(m["ch"]), int(m["src"]), int(m["dst"]), direction, transport, net_name, nic, gdr, via, conn_index
    )


def parse_ring(msg: str) -> tuple[int, list[int], bool] | None:
    """(channel, ranks in ring order, whether the line is cut short) of a ring line, or None.

    A line cut with ``...`` (2.23+) drops its last number when the cut may have fallen inside it."""
    m = RING.fullmatch(msg)
    if not m:
        return None
    ranks = [int(x) for x in m["ranks"].split()]
    cut = m["cut"] is not None
    if cut and not m["cut"].startswith(" "):
        ranks = ranks[:-1]
    return int(m["ch"]), ranks, cut


def parse_trees(msg: str) -> list[tuple[int, int, int, str]] | None:
    """(channel, rank, parent or -1, spec) per tree of a Trees line, or None."""
    m = TREES.fullmatch(msg)
    if not m:
        return None
    return [(int(t["ch"]), int(t["me"]), int(t["up"]), t["spec"]) for t in TREE.finditer(m["body"])]


def topology_kind(msg: str) -> str:
    """Which topology format a message claims to be ('' for messages that are not topology).

    Used to count a message that claims a format but does not parse; every other INFO message
    (bootstrap, plugin, tuning, timings ...) is not topology and is neither parsed nor counted.
    """
    if "- Init START" in msg or "- Init COMPLETE" in msg:
        return "init"
    if msg.startswith("Channel "):
        return "conn" if " -> " in msg or " via " in msg else "ring"
    if msg.startswith("Trees"):
        return "trees"
    return ""
