"""Topology-aware host order: hosts grouped by the leaf of their NIC 0 port 0, leaves chained by shared spines."""

from __future__ import annotations

from c4.traffic.topology import Topology, TopologyError


def home_leaf(topo: Topology, host: str) -> str:
    """The leaf a host is grouped under: the leaf of NIC 0, port 0 (rail 0 on rail-optimized fabrics)."""
    try:
        return topo.hosts[host].nics[0][0].leaf
    except (KeyError, IndexError):
        raise TopologyError(f"host {host!r} is not in the topology or has no NIC") from None


def _uplinks(topo: Topology, leaf: str) -> set[str]:
    """Live spines (aggregation switches in 3 tiers) a leaf reaches."""
    return {s for s in topo.spines if topo.live(leaf, s)}


def leaf_chain(topo: Topology, leaves: list[str]) -> list[str]:
    """Leaves in an order where each shares the most live spines with the one before (pod first, topology order on ties)."""
    left = sorted(leaves, key=lambda lf: (topo.pod_of.get(lf, 0), topo.leaves.index(lf)))
    if not left:
        return []
    chain = [left.pop(0)]
    while left:
        prev = chain[-1]
        up = _uplinks(topo, prev)
        pod = topo.pod_of.get(prev, 0)
        best = max(left, key=lambda lf: (topo.pod_of.get(lf, 0) == pod, len(up & _uplinks(topo, lf))))
        # max keeps the first of equals, so ties keep the pod/topology order
        left.remove(best)
        chain.append(best)
    return chain


def planned_order(topo: Topology, hosts: list[str]) -> list[str]:
    """The job's hosts so that ring and tree neighbours share a leaf: leaf groups in chain order, hosts by topology order."""
    if len(set(hosts)) != len(hosts):
        raise TopologyError("host list names a host twice")
    index = {h: i for i, h in enumerate(topo.hosts)}
    by_leaf: dict[str, list[str]] = {}
    for h in hosts:
        by_leaf.setdefault(home_leaf(topo, h), []).append(h)
    out = []
    for leaf in leaf_chain(topo, list(by_leaf)):
        out.extend(sorted(by_leaf[leaf], key=index.__getitem__))
    return out
