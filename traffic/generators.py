"""Fabric generators: rail-optimized leaf/spine (2-tier) with optional dual-port/dual-plane NICs, and 3-tier fat trees."""

from __future__ import annotations

from c4.traffic.topology import Host, NicPort, Topology, TopologyError


def leaf_spine(
    hosts: int,
    leaves: int,
    spines: int,
    nics_per_host: int = 8,
    ports_per_nic: int = 1,
    host_gbps: float = 400,
    uplink_gbps: float | None = None,
    oversubscription: float = 1.0,
    rail_optimized: bool = False,
    gpus_per_host: int = 8,
    dual_plane: bool = False,
    dual_tor: bool = False,
) -> Topology:
    """Hosts spread over leaves; every leaf cabled to every spine (of its plane).

    Uplink capacity per leaf = host-facing capacity / oversubscription, split evenly over spines
    (unless uplink_gbps is given). rail_optimized: NIC i of every host goes to a leaf of rail i
    (leaves = rails x groups). dual_tor: port p of a multi-port NIC goes to leaf p of a pair
    (ToRs share the spines). dual_plane: port p goes to a leaf of plane p, and plane-p leaves
    are cabled only to plane-p spines (leaf i and spine j are in plane i % ports, j % ports).
    """
    if min(hosts, leaves, spines, nics_per_host, ports_per_nic) < 1:
        raise TopologyError("leaf_spine: hosts, leaves, spines, nics_per_host and ports_per_nic must be >= 1")
    if dual_plane and dual_tor:
        raise TopologyError("leaf_spine: choose dual_plane or dual_tor, not both")
    if dual_plane and spines % ports_per_nic:
        raise TopologyError(f"leaf_spine: dual_plane needs spines ({spines}) divisible by ports_per_nic")
    topo = Topology(name=f"leaf-spine-{hosts}h-{leaves}l-{spines}s", tiers=2)
    topo.leaves = [f"leaf{i}" for i in range(leaves)]
    topo.spines = [f"spine{i}" for i in range(spines)]
    planes = ports_per_nic if (dual_plane or dual_tor) else 1
    if leaves % planes:
        raise TopologyError(
            f"leaf_spine: {planes} ports per NIC need leaves ({leaves}) divisible by {planes}"
        )
    if rail_optimized and leaves % (nics_per_host * planes):
        raise TopologyError(
            f"leaf_spine: rail_optimized needs leaves ({leaves}) divisible by rails x planes "
            f"({nics_per_host * planes})"
        )
    groups = leaves // (nics_per_host * planes) if rail_optimized else 0
    hosts_per_leaf_group = -(-hosts // max(1, groups)) if rail_optimized else -(-hosts // (leaves // planes))
    host_ports: dict[str, int] = {leaf: 0 for leaf in topo.leaves}
    for h in range(hosts):
        name = f"host{h}"
        nics = []
        for n in range(nics_per_host):
            ports = []
            for p in range(ports_per_nic):
                plane = p if (dual_plane or dual_tor) else 0
                if rail_optimized:
                    group = h // hosts_per_leaf_group
                    leaf_idx = (group * nics_per_host + n) * planes + plane
                else:
                    leaf_idx = (h // hosts_per_leaf_group) * planes + plane
                leaf = topo.leaves[leaf_idx % leaves]
                ip = f"10.{(h >> 8) & 255}.{h & 255}.{n * ports_per_nic + p + 1}"
                ports.append(NicPort(name, n, p, leaf, ip, rail=n, plane=plane if dual_plane else 0))
                host_ports[leaf] += 1
            nics.append(ports)
        topo.hosts[name] = Host(name, gpus_per_host, nics)
    port_gbps = host_gbps / ports_per_nic
    for port in topo.ports():
        topo.add_link(port.name, port.leaf, port_gbps)
    for i, leaf in enumerate(topo.leaves):
        down = host_ports[leaf] * port_gbps or host_gbps
        own = [s for j, s in enumerate(topo.spines) if not dual_plane or j % planes == i % planes]
        up = uplink_gbps if uplink_gbps is not None else down / oversubscription / len(own)
        for s in own:
            topo.add_link(leaf, s, up)
    topo.validate()
    return topo


def fat_tree(
    pods: int,
    leaves_per_pod: int,
    aggs_per_pod: int,
    cores: int,
    hosts_per_leaf: int,
    nics_per_host: int = 1,
    host_gbps: float = 400,
    link_gbps: float | None = None,
    gpus_per_host: int = 8,
) -> Topology:
    """3-tier Clos: leaves to every agg in their pod, every agg to every core."""
    if min(pods, leaves_per_pod, aggs_per_pod, cores, hosts_per_leaf, nics_per_host) < 1:
        raise TopologyError("fat_tree: every size must be >= 1")
    topo = Topology(name=f"fat-tree-{pods}p", tiers=3)
    h = 0
    for p in range(pods):
        aggs = [f"agg{p}_{a}" for a in range(aggs_per_pod)]
        topo.spines += aggs
        for a in aggs:
            topo.pod_of[a] = p
        for li in range(leaves_per_pod):
            leaf = f"leaf{p}_{li}"
            topo.leaves.append(leaf)
            topo.pod_of[leaf] = p
            for _ in range(hosts_per_leaf):
                name = f"host{h}"
                nics = [
                    [NicPort(name, n, 0, leaf, f"10.{p}.{h & 255}.{n + 1}", rail=n)]
                    for n in range(nics_per_host)
                ]
                topo.hosts[name] = Host(name, gpus_per_host, nics)
                h += 1
    topo.cores = [f"core{c}" for c in range(cores)]
    for port in topo.ports():
        topo.add_link(port.name, port.leaf, host_gbps)
    down = hosts_per_leaf * nics_per_host * host_gbps
    up_leaf = link_gbps or down / aggs_per_pod
    for leaf in topo.leaves:
        for a in topo.spines:
            if topo.pod_of[a] == topo.pod_of[leaf]:
                topo.add_link(leaf, a, up_leaf)
    up_agg = link_gbps or up_leaf * leaves_per_pod / cores
    for a in topo.spines:
        for c in topo.cores:
            topo.add_link(a, c, up_agg)
    topo.validate()
    return topo


def rail_optimized(
    hosts: int,
    groups: int,
    spines: int,
    rails: int = 8,
    ports_per_nic: int = 1,
    dual_plane: bool = False,
    host_gbps: float = 400,
    oversubscription: float = 1.0,
    gpus_per_host: int = 8,
) -> Topology:
    """Rail-optimized leaf/spine: NIC i of every host on a rail-i leaf, ``groups`` leaves per rail (per plane)."""
    planes = ports_per_nic if dual_plane else 1
    return leaf_spine(
        hosts,
        groups * rails * planes,
        spines,
        nics_per_host=rails,
        ports_per_nic=ports_per_nic,
        rail_optimized=True,
        dual_plane=dual_plane,
        host_gbps=host_gbps,
        oversubscription=oversubscription,
        gpus_per_host=gpus_per_host,
    )
