"""The fabric as the cluster reports it: cables from neighbour rows (LLDP, ibnetdiscover), the role of
each system, and what contradicts the fabric YAML, the majority or the previous pass.

Pure functions over row dicts (``fabric_neighbors`` columns); the collector feeds them the newest
rows and stores what they return (``fabric_topology``, ``fabric_contradictions``).

How discovery and the YAML combine: a cable that is discovered is taken as discovered; a cable the
YAML declares whose ends report nothing (a switch without lldpd or an agent, a link LLDP cannot see) is
kept from the YAML (``seen_from = yaml``); where both speak and disagree, the discovered cable stands and
the disagreement is a contradiction (``unexpected_neighbor``, ``missing``). Names join the two: the YAML's
host, leaf and spine names are the systems' LLDP names (their hostnames); a NIC port's optional ``ifname``
ties it to an interface.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from c4.neighbor_guard import id_problem
from c4.traffic.topology import Topology

#: An end of a cable: (system, port).
End = tuple[str, str]


@dataclass(frozen=True)
class FabricLink:
    """One cable: a (host or leaf) to b (leaf or spine), who reports it and from which source."""

    a_system: str
    a_port: str
    b_system: str
    b_port: str
    tier: str
    seen_from: str
    sources: str
    last_seen: datetime | None = None

    @property
    def ends(self) -> frozenset[End]:
        """Both ends, unordered."""
        return frozenset({(self.a_system, self.a_port), (self.b_system, self.b_port)})

    def row(self) -> dict[str, Any]:
        """As a fabric_topology row (ts, node and job are the caller's)."""
        return {
            "a_system": self.a_system,
            "a_port": self.a_port,
            "b_system": self.b_system,
            "b_port": self.b_port,
            "tier": self.tier,
            "seen_from": self.seen_from,
            "sources": self.sources,
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True)
class Contradiction:
    """Something the discovered fabric contradicts."""

    kind: str
    system: str
    port: str
    expected: str
    seen: str
    detail: str

    def row(self) -> dict[str, Any]:
        """As a fabric_contradictions row (ts, node and job are the caller's)."""
        return {
            "node": self.system,
            "kind": self.kind,
            "system": self.system,
            "port": self.port,
            "expected": self.expected,
            "seen": self.seen,
            "detail": self.detail,
        }


@dataclass
class Discovery:
    """One assembly pass: the cables, each system's role, and the contradictions found."""

    links: list[FabricLink] = field(default_factory=list)
    roles: dict[str, str] = field(default_factory=dict)  # system -> host | leaf | spine | switch
    contradictions: list[Contradiction] = field(default_factory=list)
    #: neighbour rows left out of the pass, per reason (names with control characters, too long, bad TTL)
    skipped: Counter = field(default_factory=Counter)

    def cables(self) -> set[tuple[End, End]]:
        """The cables as ((a_system, a_port), (b_system, b_port)), for comparing with a wiring."""
        return {((x.a_system, x.a_port), (x.b_system, x.b_port)) for x in self.links}


def remote_name(row: dict[str, Any]) -> str:
    """The neighbour's system name: its announced name, else its chassis id."""
    return row.get("system_name") or row.get("chassis_id") or ""


def _kinds(rows: list[dict[str, Any]], expected: Topology | None) -> dict[str, str]:
    """host, switch or aggregation_node per system: the YAML's word, else the majority of what its neighbours say."""
    votes: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        if r.get("neighbor_kind"):
            votes[remote_name(r)][r["neighbor_kind"]] += 1
    kinds = {name: c.most_common(1)[0][0] for name, c in votes.items()}
    if expected is not None:
        kinds.update({h: "host" for h in expected.hosts})
        kinds.update({s: "switch" for s in expected.leaves + expected.spines + expected.cores})
    return kinds


def _roles(
    kinds: dict[str, str], adjacency: dict[str, set[str]], expected: Topology | None
) -> dict[str, str]:
    """host, leaf (a switch with hosts), spine (a switch without hosts cabled to a leaf), switch, or
    aggregation_node (SHARP's CA inside a switch); a system nobody says anything of is a host."""
    systems = set(adjacency) | set(kinds)
    roles = {s: "switch" if kinds.get(s) == "switch" else kinds.get(s) or "host" for s in systems}
    for s in systems:
        if roles[s] == "switch" and any(roles.get(n) == "host" for n in adjacency.get(s, ())):
            roles[s] = "leaf"
    for s in systems:  # no hosts, cabled to a leaf (an aggregation switch in 3 tiers); cores stay "switch"
        if roles[s] == "switch" and any(roles.get(n) == "leaf" for n in adjacency.get(s, ())):
            roles[s] = "spine"
    if expected is not None:
        roles.update({x: "leaf" for x in expected.leaves})
        roles.update({x: "spine" for x in expected.spines})
    return roles


_RANK = {"host": 0, "leaf": 1, "switch": 1, "spine": 2, "aggregation_node": 3}


def _tier(ra: str, rb: str) -> str:
    pair = {ra, rb}
    if pair == {"host", "leaf"} or pair == {"host", "switch"}:
        return "host_leaf"
    if pair == {"leaf", "spine"}:
        return "leaf_spine"
    if pair == {"host"}:
        return "host_host"
    if "aggregation_node" in pair:
        return "internal"
    return "switch_switch"


def trusted(rows: list[dict[str, Any]], skipped: Counter) -> list[dict[str, Any]]:
    """The rows whose names and TTL pass neighbor_guard (an older or hostile agent's are not checked
    there); the others are counted by reason in ``skipped``."""
    kept = []
    for r in rows:
        problem = id_problem({**r, "system_name": remote_name(r)})
        if problem:
            skipped[problem] += 1
        else:
            kept.append(r)
    return kept


def assemble(
    rows: list[dict[str, Any]],
    expected: Topology | None = None,
    previous: list[dict[str, Any]] | None = None,
) -> Discovery:
    """Cables and contradictions from the newest neighbour rows (fabric_neighbors columns, with ``ts``).

    ``expected`` is the fabric YAML (or None); ``previous`` the previous pass's fabric_topology rows
    (or None), for cables that vanished. Rows with unsafe names are left out (``Discovery.skipped``).
    """
    skipped: Counter = Counter()
    rows = trusted(rows, skipped)
    claims: dict[End, dict[End, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    reporters: set[str] = set()
    for r in rows:
        local: End = (r["local_system"], r["interface"])
        remote: End = (remote_name(r), r.get("neighbor_port") or r.get("port_id") or "")
        if not remote[0]:
            continue
        claims[local][remote].append(r)
        reporters.add(local[0])
    cables: dict[frozenset[End], list[tuple[End, dict[str, Any]]]] = defaultdict(list)
    for local, peers in claims.items():
        for remote, rs in peers.items():
            for r in rs:
                cables[frozenset({local, remote})].append((local, r))
    adjacency: dict[str, set[str]] = defaultdict(set)
    for ends in cables:
        if len(ends) != 2:
            continue
        (x, _), (y, _) = sorted(ends)
        adjacency[x].add(y)
        adjacency[y].add(x)
    kinds = _kinds(rows, expected)
    roles = _roles(kinds, adjacency, expected)
    out = Discovery(roles=roles, skipped=skipped)
    for ends, seen in cables.items():
        if len(ends) != 2:
            continue
        a, b = sorted(ends, key=lambda e: (_RANK.get(roles.get(e[0], "host"), 1), e))
        from_a = any(local == a for local, _ in seen)
        from_b = any(local == b for local, _ in seen)
        stamps = [r["ts"] for _, r in seen if r.get("ts") is not None]
        out.links.append(
            FabricLink(
                a[0],
                a[1],
                b[0],
                b[1],
                _tier(roles.get(a[0], "host"), roles.get(b[0], "host")),
                "both" if from_a and from_b else "a" if from_a else "b",
                ",".join(sorted({r["source"] for _, r in seen})),
                max(stamps) if stamps else None,
            )
        )
    out.contradictions += _disagreements(claims, reporters)
    out.contradictions += _rail_mismatches(out.links, roles)
    if expected is not None:
        yaml_links, found = _against_yaml(out, expected, reporters | set(adjacency))
        out.links += yaml_links
        out.contradictions += found
    if previous:
        out.contradictions += _vanished(out, previous)
    out.links.sort(key=lambda x: (x.tier, x.a_system, x.a_port, x.b_system, x.b_port))
    return out


def _disagreements(claims: dict[End, dict[End, list]], reporters: set[str]) -> list[Contradiction]:
    """A cable whose far end, which reports, names another peer (mismatch) or none (one_sided)."""
    found = []
    for local, peers in claims.items():
        for remote in peers:
            if remote[0] not in reporters:
                continue  # the far end reports nothing at all: one view is all there is
            back = set(claims.get(remote, {}))
            if local in back:
                continue
            if back:
                other = ", ".join(sorted(f"{s}/{p}" for s, p in back))
                found.append(
                    Contradiction(
                        "mismatch",
                        local[0],
                        local[1],
                        f"{remote[0]}/{remote[1]} -> {local[0]}/{local[1]}",
                        other,
                        f"{local[0]}/{local[1]} sees {remote[0]}/{remote[1]}, which sees {other}",
                    )
                )
            else:
                found.append(
                    Contradiction(
                        "one_sided",
                        remote[0],
                        remote[1],
                        f"{local[0]}/{local[1]}",
                        "",
                        f"{local[0]}/{local[1]} sees {remote[0]}/{remote[1]}, which reports no neighbour on that port",
                    )
                )
    return found


def _rail_mismatches(links: list[FabricLink], roles: dict[str, str]) -> list[Contradiction]:
    """A host port on a leaf whose other hosts, by a strict majority of at least 3, use another interface."""
    by_leaf: dict[str, list[FabricLink]] = defaultdict(list)
    for x in links:
        if x.tier == "host_leaf":
            by_leaf[x.b_system].append(x)
    found = []
    for leaf, ports in by_leaf.items():
        names = Counter(x.a_port for x in ports)
        name, count = names.most_common(1)[0]
        if len(ports) < 3 or count * 2 <= len(ports):
            continue
        for x in ports:
            if x.a_port != name:
                found.append(
                    Contradiction(
                        "rail_mismatch",
                        x.a_system,
                        x.a_port,
                        name,
                        x.a_port,
                        f"{leaf}'s hosts reach it by {name} ({count} of {len(ports)} ports); {x.a_system} by "
                        f"{x.a_port} (on {leaf}/{x.b_port}): a cable in the wrong port?",
                    )
                )
    return found


def _against_yaml(
    found: Discovery, expected: Topology, discovered: set[str]
) -> tuple[list[FabricLink], list[Contradiction]]:
    """Cables the YAML declares that discovery cannot see, and where the two disagree."""
    issues: list[Contradiction] = []
    extra: list[FabricLink] = []
    host_leaves: dict[tuple[str, str], int] = Counter()
    for x in found.links:
        if x.tier == "host_leaf":
            host_leaves[(x.a_system, x.b_system)] += 1
    for x in found.links:
        if x.tier != "host_leaf" or x.a_system not in expected.hosts:
            continue
        ports = [p for nic in expected.hosts[x.a_system].nics for p in nic]
        named = [p for p in ports if p.ifname == x.a_port]
        want = {p.leaf for p in named} if named else {p.leaf for p in ports}
        if x.b_system not in want:
            issues.append(
                Contradiction(
                    "unexpected_neighbor",
                    x.a_system,
                    x.a_port,
                    " or ".join(sorted(want)),
                    f"{x.b_system}/{x.b_port}",
                    f"the fabric YAML cables {x.a_system}/{x.a_port} to {' or '.join(sorted(want))}; "
                    f"LLDP sees {x.b_system}/{x.b_port}",
                )
            )
    for host, h in expected.hosts.items():
        declared = Counter(p.leaf for nic in h.nics for p in nic)
        for leaf, n in declared.items():
            if host not in discovered and leaf not in discovered:
                for p in (p for nic in h.nics for p in nic if p.leaf == leaf):
                    extra.append(FabricLink(host, p.ifname or p.name, leaf, "", "host_leaf", "yaml", "yaml"))
                continue
            if host_leaves[(host, leaf)] < n:
                issues.append(
                    Contradiction(
                        "missing",
                        host,
                        "",
                        f"{n} cable(s) to {leaf}",
                        f"{host_leaves[(host, leaf)]}",
                        f"the fabric YAML cables {host} to {leaf} {n} time(s); discovery sees {host_leaves[(host, leaf)]}",
                    )
                )
    seen_pairs = {frozenset({x.a_system, x.b_system}) for x in found.links}
    switches = set(expected.leaves + expected.spines + expected.cores)
    done: set[frozenset[str]] = set()
    for link in expected.links:
        pair = frozenset({link.src, link.dst})
        if not pair <= switches or pair in done or len(pair) != 2:
            continue
        done.add(pair)
        lo, hi = sorted(pair, key=lambda s: (_RANK.get(found.roles.get(s, "switch"), 1), s))
        if pair in seen_pairs:
            continue
        if lo in discovered and hi in discovered:
            issues.append(
                Contradiction(
                    "missing",
                    lo,
                    "",
                    hi,
                    "",
                    f"the fabric YAML cables {lo} to {hi}; discovery sees no cable between them",
                )
            )
        else:
            extra.append(FabricLink(lo, "", hi, "", "leaf_spine", "yaml", "yaml"))
    for x in found.links:
        if x.tier == "leaf_spine" and {x.a_system, x.b_system} <= switches:
            if not expected.has_link(x.a_system, x.b_system):
                issues.append(
                    Contradiction(
                        "unexpected_neighbor",
                        x.a_system,
                        x.a_port,
                        "no cable",
                        f"{x.b_system}/{x.b_port}",
                        f"the fabric YAML has no cable {x.a_system}-{x.b_system}; LLDP sees one",
                    )
                )
    return extra, issues


def _vanished(found: Discovery, previous: list[dict[str, Any]]) -> list[Contradiction]:
    """Cables of the previous pass that this pass does not see (YAML-only cables excepted)."""
    now = {x.ends for x in found.links}
    out = []
    for p in previous:
        if p.get("seen_from") == "yaml":
            continue
        ends = frozenset({(p["a_system"], p["a_port"]), (p["b_system"], p["b_port"])})
        if ends not in now:
            out.append(
                Contradiction(
                    "vanished",
                    p["a_system"],
                    p["a_port"],
                    f"{p['b_system']}/{p['b_port']}",
                    "",
                    f"the cable {p['a_system']}/{p['a_port']} - {p['b_system']}/{p['b_port']} was seen in the "
                    "previous pass and is not now",
                )
            )
    return out
