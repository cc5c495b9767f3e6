"""Fabric model: hosts with NIC ports, leaf/spine(/core) switches, directed links with capacity and state."""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class TopologyError(ValueError):
    """The fabric description is wrong; the message names the bad element."""


@dataclass
class Link:
    """One direction of a physical link (full duplex = two Links)."""

    id: int
    src: str
    dst: str
    capacity_gbps: float
    state: str = "up"  # up | down | degraded
    rate_gbps: float | None = None  # the degraded rate

    @property
    def usable_gbps(self) -> float:
        """Capacity now: 0 when down, the degraded rate when degraded."""
        if self.state == "down":
            return 0.0
        if self.state == "degraded" and self.rate_gbps is not None:
            return self.rate_gbps
        return self.capacity_gbps

    @property
    def name(self) -> str:
        """'a->b'."""
        return f"{self.src}->{self.dst}"


@dataclass
class NicPort:
    """A host NIC port and the leaf it is cabled to."""

    host: str
    nic: int
    port: int
    leaf: str
    ip: str
    rail: int = 0
    plane: int = 0
    ifname: str = ""  # the host's interface for this port (joins discovered LLDP neighbours), '' if unsaid

    @property
    def name(self) -> str:
        """'host/nic<i>p<j>'."""
        return f"{self.host}/nic{self.nic}p{self.port}"


@dataclass
class Host:
    """A server with GPUs and NICs."""

    name: str
    gpus: int
    nics: list[list[NicPort]]  # nics[nic][port]


@dataclass
class Topology:
    """A 2-tier (leaf/spine) or 3-tier (leaf/agg/core) Clos with hosts."""

    name: str = "fabric"
    tiers: int = 2
    hosts: dict[str, Host] = field(default_factory=dict)
    leaves: list[str] = field(default_factory=list)
    spines: list[str] = field(default_factory=list)  # 2-tier spines, or 3-tier aggregation switches
    cores: list[str] = field(default_factory=list)
    pod_of: dict[str, int] = field(default_factory=dict)  # leaf/agg -> pod (3-tier)
    links: list[Link] = field(default_factory=list)
    _by_ends: dict[tuple[str, str], Link] = field(default_factory=dict)
    _up: dict[str, list[Link]] = field(default_factory=lambda: defaultdict(list))

    def add_link(self, a: str, b: str, gbps: float) -> None:
        """A full-duplex cable between a and b."""
        if gbps <= 0:
            raise TopologyError(f"link {a}<->{b}: capacity must be positive, got {gbps}")
        for s, d in ((a, b), (b, a)):
            if (s, d) in self._by_ends:
                raise TopologyError(f"link {s}->{d} declared twice")
            link = Link(len(self.links), s, d, float(gbps))
            self.links.append(link)
            self._by_ends[(s, d)] = link
            self._up[s].append(link)

    def link(self, a: str, b: str) -> Link:
        """The directed link a->b."""
        try:
            return self._by_ends[(a, b)]
        except KeyError:
            raise TopologyError(f"no link {a}->{b}") from None

    def has_link(self, a: str, b: str) -> bool:
        """Whether a->b exists."""
        return (a, b) in self._by_ends

    def set_state(self, a: str, b: str, state: str, rate_gbps: float | None = None) -> None:
        """Change both directions of the cable a<->b."""
        if state not in ("up", "down", "degraded"):
            raise TopologyError(f"link {a}<->{b}: unknown state {state!r} (up, down or degraded)")
        num = isinstance(rate_gbps, (int, float)) and not isinstance(rate_gbps, bool)
        if state == "degraded" and not (num and 0 < rate_gbps < float("inf")):
            raise TopologyError(f"link {a}<->{b}: a degraded link needs a positive rate_gbps")
        for s, d in ((a, b), (b, a)):
            link = self.link(s, d)
            link.state, link.rate_gbps = state, rate_gbps

    def ports(self) -> list[NicPort]:
        """Every host NIC port."""
        return [p for h in self.hosts.values() for nic in h.nics for p in nic]

    def port(self, host: str, nic: int, port: int = 0) -> NicPort:
        """One NIC port of a host."""
        try:
            return self.hosts[host].nics[nic][port]
        except (KeyError, IndexError):
            raise TopologyError(f"host {host!r} has no nic {nic} port {port}") from None

    def live(self, a: str, b: str) -> bool:
        """a->b exists and carries traffic."""
        link = self._by_ends.get((a, b))
        return link is not None and link.usable_gbps > 0

    def spine_paths(self, src_leaf: str, dst_leaf: str) -> list[list[str]]:
        """Switch paths between two leaves (through one spine, or agg/core/agg in 3 tiers)."""
        if src_leaf == dst_leaf:
            return [[src_leaf]]
        if self.tiers == 2:
            return [
                [src_leaf, s, dst_leaf]
                for s in self.spines
                if self.has_link(src_leaf, s) and self.has_link(s, dst_leaf)
            ]
        src_aggs = [s for s in self.spines if self.has_link(src_leaf, s)]
        dst_aggs = [s for s in self.spines if self.has_link(s, dst_leaf)]
        if self.pod_of.get(src_leaf) == self.pod_of.get(dst_leaf):
            return [[src_leaf, a, dst_leaf] for a in src_aggs if a in dst_aggs]
        out = []
        for a in src_aggs:
            for c in self.cores:
                if not self.has_link(a, c):
                    continue
                for b in dst_aggs:
                    if self.has_link(c, b):
                        out.append([src_leaf, a, c, b, dst_leaf])
        return out

    def next_hops(self, cur: str, dst_leaf: str) -> list[str]:
        """Equal-cost next switches from ``cur`` toward ``dst_leaf`` (what an ECMP group holds), live ones only."""
        if cur == dst_leaf:
            return []
        if self.tiers == 2:
            if cur in self.spines:
                return [dst_leaf] if self.live(cur, dst_leaf) else []
            return [s for s in self.spines if self.live(cur, s) and self.live(s, dst_leaf)]
        pod = self.pod_of.get(dst_leaf)
        if cur in self.leaves:
            aggs = [a for a in self.spines if self.live(cur, a)]
            if self.pod_of.get(cur) == pod:
                aggs = [a for a in aggs if self.live(a, dst_leaf)]
            return aggs
        if cur in self.spines:
            if self.pod_of.get(cur) == pod:
                return [dst_leaf] if self.live(cur, dst_leaf) else []
            return [
                c
                for c in self.cores
                if self.live(cur, c)
                and any(
                    self.live(c, a) and self.live(a, dst_leaf) for a in self.spines if self.pod_of[a] == pod
                )
            ]
        if cur in self.cores:
            return [
                a
                for a in self.spines
                if self.pod_of[a] == pod and self.live(cur, a) and self.live(a, dst_leaf)
            ]
        return []

    def validate(self) -> None:
        """Every port's leaf exists and is cabled, IPs are unique; raise TopologyError naming the element."""
        leaves = set(self.leaves)
        ips: dict[str, str] = {}
        for p in self.ports():
            if p.leaf not in leaves:
                raise TopologyError(f"NIC port {p.name}: leaf {p.leaf!r} is not declared")
            if not self.has_link(p.name, p.leaf):
                raise TopologyError(f"NIC port {p.name}: no cable to leaf {p.leaf}")
            if p.ip in ips:
                raise TopologyError(f"NIC port {p.name}: ip {p.ip} already used by {ips[p.ip]}")
            ips[p.ip] = p.name
        for leaf in self.leaves:
            if not any(self.has_link(leaf, s) for s in self.spines):
                raise TopologyError(f"leaf {leaf!r} has no uplink")


def _check_generator_args(kind: str, fn: Any, args: dict, path: object) -> None:
    """Each generator argument of the annotated kind: bool, positive int, or positive finite number (None if allowed)."""
    params = inspect.signature(fn).parameters
    for key, v in args.items():
        ann = str(params[key].annotation)
        if v is None and "None" in ann:
            continue
        if ann.startswith("bool"):
            ok, want = isinstance(v, bool), "true or false"
        elif ann.startswith("int"):
            ok, want = isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer"
        else:
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            ok, want = num and 0 < v < float("inf"), "a positive number"
        if not ok:
            raise TopologyError(f"{path}: {kind}: `{key}` must be {want}, got {v!r}")


def load_yaml(path: Path | str) -> Topology:
    """Load a topology spec (see deploy/examples/topology-*.yaml)."""

    from c4.traffic.generators import fat_tree, leaf_spine, rail_optimized  # lazy: they import this module
    from c4.traffic.names import check_topology_names, load_yaml_unique  # lazy: it imports this module

    spec: dict[str, Any] = load_yaml_unique(path)
    if not isinstance(spec, dict):
        raise TopologyError(f"{path}: expected a mapping at the top")
    kind = spec.get("generator")
    if kind is None and "hosts" in spec:
        from c4.traffic.spec import from_spec  # lazy: it imports this module

        topo = from_spec({k: v for k, v in spec.items() if k != "failures"}, where=str(path))
    else:
        generators = {"leaf_spine": leaf_spine, "fat_tree": fat_tree, "rail_optimized": rail_optimized}
        if kind not in generators:
            raise TopologyError(
                f"{path}: generator must be leaf_spine or fat_tree (or list hosts/leaves/spines/links), got {kind!r}"
            )
        args = dict(spec.get("args") or {})
        allowed = set(inspect.signature(generators[kind]).parameters)
        unknown = sorted(set(args) - allowed)
        if unknown:
            raise TopologyError(f"{path}: {kind} has no argument(s) {unknown}; allowed: {sorted(allowed)}")
        _check_generator_args(kind, generators[kind], args, path)
        try:
            topo = generators[kind](**args)
        except TypeError as exc:
            raise TopologyError(f"{path}: {kind}: {exc}") from None
        topo.name = str(spec.get("name", topo.name))
    for i, f in enumerate(spec.get("failures") or []):
        link = f.get("link") if isinstance(f, dict) else None
        if not isinstance(link, list) or len(link) != 2:
            raise TopologyError(f"{path}: failures[{i}] needs link: [a, b]")
        try:
            topo.set_state(link[0], link[1], f.get("state", "down"), f.get("rate_gbps"))
        except TopologyError as exc:
            raise TopologyError(f"{path}: failures[{i}]: {exc}") from None
    topo.validate()
    check_topology_names(topo, str(path))
    return topo
