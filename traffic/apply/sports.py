"""Per-QP source-port table and per-flow switch routes: the parts of a plan only a NIC hook or the switches can apply."""

from __future__ import annotations

from c4.traffic.planner import Piece, Plan
from c4.traffic.topology import NicPort

#: RoCEv2's UDP destination port (IANA)
ROCE_UDP_DPORT = 4791
#: IP protocol number of UDP
PROTO_UDP = 17
#: format tag of the switch-routes export
ROUTES_FORMAT = "c4-switch-routes/1"


def _dev(port: NicPort) -> str:
    """The port's device name: the host interface when the topology names it, else nic<i>."""
    return port.ifname or f"nic{port.nic}"


def sport_rows(plan: Plan, plan_id: str) -> list[dict]:
    """One row per piece (QP): who connects to whom over which NIC port, and the UDP source port to set."""
    rows = []
    for p in plan.pieces:
        s, d = p.src_port, p.dst_port
        rows.append(
            {
                "plan_id": plan_id,
                "job": p.job,
                "src_host": p.src,
                "src_dev": _dev(s),
                "src_port": s.port,
                "src_ip": s.ip,
                "dst_host": p.dst,
                "dst_dev": _dev(d),
                "dst_port": d.port,
                "dst_ip": d.ip,
                "channel": p.channel,
                "qp": p.qp,
                "udp_sport": p.sport,
                "path": p.nodes[1:-1],
            }
        )
    return rows


def _tuple(p: Piece) -> dict:
    """The piece's RoCEv2 5-tuple."""
    return {
        "src_ip": p.src_port.ip,
        "dst_ip": p.dst_port.ip,
        "proto": PROTO_UDP,
        "udp_sport": p.sport,
        "udp_dport": ROCE_UDP_DPORT,
    }


def switch_routes(plan: Plan, plan_id: str) -> dict:
    """Per switch, 5-tuple -> egress (the next node); rules two pieces would give different egresses are listed as conflicts."""
    rules: dict[str, dict[tuple, dict]] = {}
    conflicts = []
    for p in plan.pieces:
        t = _tuple(p)
        key = tuple(t.values())
        for here, nxt in zip(p.nodes[1:-1], p.nodes[2:], strict=False):
            have = rules.setdefault(here, {}).get(key)
            if have is None:
                rules[here][key] = {"match": t, "egress": nxt, "job": p.job}
            elif have["egress"] != nxt:
                conflicts.append({"switch": here, "match": t, "egresses": [have["egress"], nxt]})
    return {
        "format": ROUTES_FORMAT,
        "plan_id": plan_id,
        "topology": plan.topo.name,
        "switches": {sw: list(r.values()) for sw, r in sorted(rules.items())},
        "conflicts": conflicts,
    }
