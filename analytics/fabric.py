"""The fabric model C4D maps slow connections onto: which switch links each connection crosses, and their capacity."""

from __future__ import annotations

from dataclasses import dataclass, field


def cable_of(directed: str) -> str:
    """The cable (both directions) of a directed link name 'a->b': 'a<->b', ends sorted."""
    a, b = directed.split("->")
    return "<->".join(sorted((a, b)))


@dataclass
class FabricModel:
    """Per connection (src node, dst node, channel) the directed switch links it crosses ('leaf0->spine1').

    Built from C4P's plan or the ECMP hash model over the topology; ``capacity_gbps`` holds each directed
    link's nominal rate, so a link carrying less than it could (degraded) is told apart from one that is
    full (congested by colliding flows).
    """

    paths: dict[tuple[str, str, int], list[str]] = field(default_factory=dict)
    capacity_gbps: dict[str, float] = field(default_factory=dict)

    def cables(self, src: str, dst: str, channel: int) -> list[str]:
        """The cables a connection crosses."""
        return sorted({cable_of(d) for d in self.paths.get((src, dst, channel), ())})
