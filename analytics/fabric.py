"""The fabric model C4D maps slow connections onto: which switch links each connection crosses, and their capacity."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from c4.traffic.topology import TopologyError, load_yaml


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


def from_plans(plans, capacity_gbps: dict[str, float] | None = None) -> FabricModel | None:
    """The newest C4P plan (rows of the ``plans`` table, a polars frame) as a fabric model; None if empty."""
    if plans is None or plans.is_empty():
        return None
    newest = plans.sort("ts")["plan_id"][-1]
    model = FabricModel(capacity_gbps=dict(capacity_gbps or {}))
    for src, dst, channel, path in (
        plans.filter(pl.col("plan_id") == newest).select(["src", "dst", "channel", "path"]).iter_rows()
    ):
        hops = [h for h in (path or "").split(">") if h]
        links = model.paths.setdefault((src, dst, channel), [])
        for a, b in zip(hops, hops[1:], strict=False):
            if f"{a}->{b}" not in links:
                links.append(f"{a}->{b}")
    return model


def capacities_from_topology(path: str) -> dict[str, float]:
    """Nominal rate of every directed switch-to-switch link of a fabric YAML (see deploy/examples/topology-*.yaml)."""
    try:
        topo = load_yaml(path)
    except (OSError, TopologyError, ValueError) as exc:
        raise ValueError(f"fabric_topology {path}: {exc}") from None
    switches = set(topo.leaves) | set(topo.spines) | set(topo.cores)
    return {
        f"{x.src}->{x.dst}": x.capacity_gbps for x in topo.links if x.src in switches and x.dst in switches
    }
