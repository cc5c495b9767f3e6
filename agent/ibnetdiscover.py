"""``ibnetdiscover`` topology files as fabric_neighbors rows: one per link line of each node block.

The format (infiniband-diags' ``ibnetdiscover.c`` and its man page's TOPOLOGY FILE FORMAT): a node block
starts with ``vendid=``/``devid=``/``*guid=`` lines and a ``Switch|Ca|Rt <ports> "<T>-<guid>" # "<desc>" ...``
line; each following ``[<port>](<portguid>)? "<T>-<guid>"[<port>](<portguid>)? # ...`` line is a link from
that port to the quoted peer, whose description and active width/speed (``4xNDR``) end the comment.

Names: a CA's NodeDescription is ``<hostname> <device>`` on OFED/rdma-core hosts (``node01 mlx5_0``,
``node24 HCA-1``), so the host is its first word and the port ``<device>/<port>``; a description of
another shape (the firmware default ``MT4129 ConnectX7 Mellanox Technologies``) names no host, and the
node is named ``H-<guid>``. A switch is named by NVIDIA's ``MF0;<name>:<model>/U1`` description's
``<name>``, by a one-word description (a host name an operator set), else ``S-<guid>`` (a model name
such as ``ISR9024 Voltaire`` is not unique). The SHARP ``Mellanox Technologies Aggregation Node`` CA on
a switch's last port is part of the switch, not a host (neighbor_kind ``aggregation_node``).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from c4.neighbor_guard import checked_rows

_NODE = re.compile(r'^(Switch|Ca|Rt)\s+(\d+)\s+"([SHR])-([0-9a-fA-F]+)"\s*#\s*"([^"]*)"')
_LINK = re.compile(
    r'^\[(\d+)\](?:\[ext \d+\])?(?:\(([0-9a-fA-F]+)\))?\s*"([SHR])-([0-9a-fA-F]+)"\[(\d+)\](?:\[ext \d+\])?'
    r"(?:\s*\(([0-9a-fA-F]+)\))?\s*#(.*)$"
)
_QUOTED = re.compile(r'"([^"]*)"')
#: The NodeDescription of the SHARP aggregation node, a CA inside each NVIDIA switch (its last port).
SHARP_AGGREGATION_NODE = "Mellanox Technologies Aggregation Node"
_RATE = re.compile(r"\b(\d+x[A-Z]+\d*)\b")
_SWITCH_NAME = re.compile(r"^MF0;([^:]+):")
#: Lines that belong to the format but carry no link.
_KNOWN = ("vendid=", "devid=", "sysimgguid=", "switchguid=", "caguid=", "rtguid=", "#", "Non-Chassis Nodes")
_KNOWN_RE = re.compile(r"^(Chassis \d+|Hostname: )")


def node_name(kind: str, guid: str, descr: str) -> tuple[str, str]:
    """(system name, device) of a node from its type letter (S/H/R), GUID and NodeDescription."""
    if kind == "S":
        m = _SWITCH_NAME.match(descr)
        if m:
            return m.group(1), ""
        one_word = descr.strip() and len(descr.split()) == 1
        return (descr.strip() if one_word else f"S-{guid}"), ""
    words = descr.split()
    if len(words) == 2 and not words[0].startswith("MT"):
        return words[0], words[1]
    return f"{kind}-{guid}", ""


def _kind(kind: str, descr: str) -> str:
    """switch, host, or aggregation_node for the SHARP aggregation CA inside an NVIDIA switch."""
    if kind == "S":
        return "switch"
    if kind == "H":
        return "aggregation_node" if descr == SHARP_AGGREGATION_NODE else "host"
    return ""


def _port(device: str, port: str) -> str:
    return f"{device}/{port}" if device else port


def topology_rows(text: str, skipped: Counter, amended: Counter | None = None) -> list[dict[str, Any]]:
    """fabric_neighbors rows from one ibnetdiscover output, checked by neighbor_guard (text made safe
    counted in ``amended``); a line that cannot be read is counted by reason."""
    if not text.strip():
        skipped["report_empty"] += 1
        return []
    rows: list[dict[str, Any]] = []
    node: tuple[str, str, str, str] | None = None  # (kind letter, guid, name, device)
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(_KNOWN) or _KNOWN_RE.match(line):
            continue
        if line.startswith(("Switch", "Ca", "Rt")):
            m = _NODE.match(line)
            if not m:
                skipped["node_line"] += 1
                node = None
                continue
            name, device = node_name(m.group(3), m.group(4).lower(), m.group(5))
            node = (m.group(3), m.group(4).lower(), name, device)
            continue
        if not line.startswith("["):
            skipped["unknown_line"] += 1
            continue
        m = _LINK.match(line)
        if not m:
            skipped["link_line"] += 1
            continue
        if node is None:
            skipped["link_outside_node"] += 1
            continue
        port, peer_kind, peer_guid, peer_port, comment = (
            m.group(1),
            m.group(3),
            m.group(4).lower(),
            m.group(5),
            m.group(7),
        )
        quoted = _QUOTED.findall(comment)
        peer_descr = quoted[-1] if quoted else ""
        peer_name, peer_device = node_name(peer_kind, peer_guid, peer_descr)
        rate = _RATE.search(comment.rsplit('"', 1)[-1])
        kind, guid, name, device = node
        rows.append(
            {
                "source": "ibnetdiscover",
                "local_system": name,
                "interface": _port(device, port),
                "local_id": guid,
                "chassis_id": peer_guid,
                "chassis_id_type": "guid",
                "system_name": peer_name,
                "system_descr": peer_descr,
                "port_id": peer_port,
                "port_id_type": "number",
                "port_descr": "",
                "neighbor_port": _port(peer_device, peer_port),
                "neighbor_kind": _kind(peer_kind, peer_descr),
                "capabilities": {"S": "Switch", "H": "CA", "R": "Router"}[peer_kind],
                "mgmt_ip": "",
                "ttl_s": None,
                "link_rate": rate.group(1) if rate else "",
            }
        )
    return checked_rows(rows, skipped, Counter() if amended is None else amended)
