"""The twin's routes under an applied C4P plan: every piece on its planned path, as a source-port or
per-flow-route hook would pin it; a piece whose planned path crosses a dead link is re-hashed by the
switches over their live next hops (resilient ECMP: only the flows of the lost member move)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from c4.traffic.collectives import Flow
from c4.traffic.hashing import FiveTuple, switch_hash
from c4.traffic.planner import Plan
from c4.traffic.routing import path_links
from c4.traffic.topology import Topology


class PlanMismatch(ValueError):
    """The plan does not describe the twin's connections; the message names the connection."""


@dataclass(frozen=True)
class PlannedPiece:
    """One QP of a connection as a plan routes it: its NIC ports, switch path and 5-tuple."""

    src: str
    dst: str
    channel: int
    src_port: str
    dst_port: str
    switches: tuple[str, ...]
    share_bytes: float
    src_ip: str
    dst_ip: str
    udp_sport: int


def planned_pieces(plan: Plan | Iterable[dict[str, Any]]) -> list[PlannedPiece]:
    """The pieces of a Plan, or of `plans` table rows of one plan."""
    if isinstance(plan, Plan):
        return [
            PlannedPiece(
                p.src,
                p.dst,
                p.channel,
                p.src_port.name,
                p.dst_port.name,
                tuple(p.nodes[1:-1]),
                p.bytes,
                p.src_port.ip,
                p.dst_port.ip,
                p.sport,
            )
            for p in plan.pieces
        ]
    out = []
    for r in plan:
        out.append(
            PlannedPiece(
                r["src"],
                r["dst"],
                int(r["channel"]),
                r["src_port"],
                r["dst_port"],
                tuple(h for h in (r["path"] or "").split(">") if h),
                float(r["share_bytes"]),
                r["src_ip"],
                r["dst_ip"],
                int(r["udp_sport"]),
            )
        )
    if len({(r.src, r.dst, r.channel, r.udp_sport, r.switches) for r in out}) != len(out):
        raise PlanMismatch("the rows hold the same piece twice: pass the rows of one plan")
    return out


def _walk(topo: Topology, piece: PlannedPiece, hash_seed: int) -> list[str]:
    """The node path the piece takes now: its planned hops while they are live, then the switches' hashes."""
    nodes = [piece.src_port, *piece.switches, piece.dst_port]
    if not piece.switches or all(topo.live(a, b) for a, b in zip(nodes, nodes[1:], strict=False)):
        return nodes
    dst_leaf = piece.switches[-1]
    t = FiveTuple(piece.src_ip, piece.dst_ip, piece.udp_sport)
    walked = [piece.switches[0]]
    on_plan = True
    while walked[-1] != dst_leaf and len(walked) <= len(topo.leaves) + len(topo.spines) + len(topo.cores):
        cur = walked[-1]
        hops = sorted(topo.next_hops(cur, dst_leaf))
        planned = piece.switches[len(walked)] if on_plan and len(walked) < len(piece.switches) else None
        if planned in hops:
            walked.append(planned)
            continue
        if not hops:  # nowhere to go: the planned path, dead link and all (the piece stalls)
            return nodes
        on_plan = False
        walked.append(hops[switch_hash(cur, "crc32", hash_seed).pick(t, len(hops))])
    if walked[-1] != dst_leaf:
        return nodes
    return [piece.src_port, *walked, piece.dst_port]


def planned_subflows(
    topo: Topology, flows: list[Flow], pieces: list[PlannedPiece], hash_seed: int = 0
) -> tuple[list[tuple[list[int], float]], list[int]]:
    """(link ids, bytes) per piece on the twin's fabric now, and the index of the flow each belongs to.

    A connection's bytes are the twin's; the plan gives each piece its share of them. Every flow must
    have pieces, and every piece a flow.
    """
    index: dict[tuple[str, str, int], int] = {}
    for i, f in enumerate(flows):
        key = (f.src, f.dst, f.channel)
        if key in index:
            raise PlanMismatch(
                f"two connections {f.src}->{f.dst} channel {f.channel}: a plan cannot tell them apart"
            )
        index[key] = i
    total: dict[int, float] = {}
    owner: list[int] = []
    for p in pieces:
        fi = index.get((p.src, p.dst, p.channel))
        if fi is None:
            raise PlanMismatch(
                f"the plan routes {p.src}->{p.dst} channel {p.channel}, which the twin does not run"
            )
        owner.append(fi)
        total[fi] = total.get(fi, 0.0) + p.share_bytes
    missing = [f for i, f in enumerate(flows) if i not in total]
    if missing:
        f = missing[0]
        raise PlanMismatch(
            f"the plan leaves {len(missing)} connection(s) unrouted, e.g. {f.src}->{f.dst} channel {f.channel}"
        )
    subflows = []
    for p, fi in zip(pieces, owner, strict=True):
        share = p.share_bytes / total[fi] if total[fi] > 0 else 1.0 / sum(1 for o in owner if o == fi)
        subflows.append((path_links(topo, _walk(topo, p, hash_seed)), flows[fi].bytes * share))
    return subflows, owner
