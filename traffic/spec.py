"""Explicit fabric specs: switches, hosts with NIC ports and cables listed one by one (YAML/dict form)."""

from __future__ import annotations

from typing import Any

from c4.traffic.names import check_host, check_label
from c4.traffic.topology import Host, NicPort, Topology, TopologyError

_TOP_KEYS = {"name", "tiers", "leaves", "spines", "cores", "pods", "hosts", "links", "failures", "host_gbps"}
_HOST_KEYS = {"gpus", "nics"}


def _number(raw: Any, where: str, what: str, integer: bool = False) -> float:
    """A finite positive number (an int when integer), or TopologyError naming where and what."""
    ok = (
        isinstance(raw, (int, float))
        and not isinstance(raw, bool)
        and raw == raw
        and abs(raw) != float("inf")
    )
    if integer:
        ok = ok and float(raw).is_integer()
    if not ok or raw <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise TopologyError(f"{where}: {what} must be {kind}, got {raw!r}")
    return int(raw) if integer else float(raw)


def _names(spec: dict, key: str, where: str) -> list[str]:
    raw = spec.get(key) or []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise TopologyError(f"{where}: `{key}` must be a list of switch names")
    return [check_label(x, where, f"{key} entry") for x in raw]


def _port(host: str, n: int, p: int, raw: Any, default_gbps: float, where: str) -> tuple[NicPort, float]:
    """One NIC port entry: a leaf name, or {leaf, ip, gbps, plane, ifname}."""
    name = f"{host}/nic{n}p{p}"
    if isinstance(raw, str):
        raw = {"leaf": raw}
    if not isinstance(raw, dict) or "leaf" not in raw:
        raise TopologyError(f"{where}: NIC port {name} needs a `leaf`")
    unknown = set(raw) - {"leaf", "ip", "gbps", "plane", "ifname"}
    if unknown:
        raise TopologyError(f"{where}: NIC port {name}: unknown keys {sorted(unknown)}")
    ip = raw.get("ip")
    if ip is None:
        raise TopologyError(f"{where}: NIC port {name} needs an `ip`")
    gbps = _number(raw.get("gbps", default_gbps), where, f"NIC port {name}: gbps")
    plane = raw.get("plane", 0)
    if not isinstance(plane, int) or isinstance(plane, bool) or plane < 0:
        raise TopologyError(f"{where}: NIC port {name}: plane must be a non-negative integer, got {plane!r}")
    port = NicPort(host, n, p, str(raw["leaf"]), str(ip), rail=n, plane=plane)
    port.ifname = str(raw.get("ifname", ""))
    return port, gbps


def from_spec(spec: dict, where: str = "spec") -> Topology:
    """A Topology from an explicit spec; errors name the bad element (host, port, link, switch)."""
    unknown = set(spec) - _TOP_KEYS
    if unknown:
        raise TopologyError(f"{where}: unknown keys {sorted(unknown)}")
    tiers = spec.get("tiers", 3 if spec.get("cores") else 2)
    if tiers not in (2, 3) or isinstance(tiers, bool):
        raise TopologyError(f"{where}: tiers must be 2 or 3, got {tiers}")
    topo = Topology(name=check_label(spec.get("name", "fabric"), where, "fabric"), tiers=tiers)
    topo.leaves = _names(spec, "leaves", where)
    topo.spines = _names(spec, "spines", where)
    topo.cores = _names(spec, "cores", where)
    if not topo.leaves or not topo.spines:
        raise TopologyError(f"{where}: needs at least one leaf and one spine")
    switches = topo.leaves + topo.spines + topo.cores
    seen: set[str] = set()
    for sw in switches:
        if sw in seen:
            raise TopologyError(f"{where}: switch {sw!r} declared twice")
        seen.add(sw)
    pods = spec.get("pods") or {}
    if not isinstance(pods, dict):
        raise TopologyError(f"{where}: `pods` must map switch names to pod numbers")
    if tiers == 3:
        for sw in topo.leaves + topo.spines:
            if sw not in pods:
                raise TopologyError(f"{where}: 3-tier switch {sw!r} has no pod in `pods`")
            if not isinstance(pods[sw], int) or isinstance(pods[sw], bool) or pods[sw] < 0:
                raise TopologyError(
                    f"{where}: pods: {sw!r} needs a non-negative integer pod, got {pods[sw]!r}"
                )
        topo.pod_of = {str(k): int(v) for k, v in pods.items()}
    default_gbps = _number(spec.get("host_gbps", 400), where, "host_gbps")
    hosts = spec.get("hosts")
    if not isinstance(hosts, dict) or not hosts:
        raise TopologyError(f"{where}: `hosts` must map host names to {{gpus, nics}}")
    cables: list[tuple[str, str, float]] = []
    for hname, hraw in hosts.items():
        hname = check_host(hname, where)
        if hname in seen:
            raise TopologyError(f"{where}: host {hname!r} has the name of a switch")
        if not isinstance(hraw, dict) or not isinstance(hraw.get("nics"), list) or not hraw["nics"]:
            raise TopologyError(f"{where}: host {hname!r} needs `nics`: a list of NICs, each a list of ports")
        unknown = set(hraw) - _HOST_KEYS
        if unknown:
            raise TopologyError(
                f"{where}: host {hname!r}: unknown keys {sorted(unknown)}; allowed: gpus, nics"
            )
        gpus = _number(hraw.get("gpus", 8), where, f"host {hname!r}: gpus", integer=True)
        nics = []
        for n, nraw in enumerate(hraw["nics"]):
            ports_raw = nraw if isinstance(nraw, list) else [nraw]
            ports = []
            for p, praw in enumerate(ports_raw):
                port, gbps = _port(hname, n, p, praw, default_gbps, where)
                if port.leaf not in topo.leaves:
                    raise TopologyError(f"{where}: NIC port {port.name}: leaf {port.leaf!r} is not declared")
                ports.append(port)
                cables.append((port.name, port.leaf, gbps))
            nics.append(ports)
        topo.hosts[hname] = Host(hname, gpus, nics)
    for a, b, gbps in cables:
        topo.add_link(a, b, gbps)
    for i, lraw in enumerate(spec.get("links") or []):
        if isinstance(lraw, list) and len(lraw) == 3:
            lraw = {"a": lraw[0], "b": lraw[1], "gbps": lraw[2]}
        if not isinstance(lraw, dict) or not {"a", "b", "gbps"} <= set(lraw):
            raise TopologyError(
                f"{where}: links[{i}] must be [a, b, gbps] or {{a, b, gbps, state, rate_gbps}}"
            )
        a, b = str(lraw["a"]), str(lraw["b"])
        for end in (a, b):
            if end not in seen:
                raise TopologyError(f"{where}: links[{i}] {a}<->{b}: {end!r} is not a declared switch")
        topo.add_link(a, b, _number(lraw["gbps"], where, f"links[{i}] {a}<->{b}: gbps"))
        if lraw.get("state", "up") != "up":
            topo.set_state(a, b, lraw["state"], lraw.get("rate_gbps"))
    return topo
