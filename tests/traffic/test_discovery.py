"""Assembling the fabric from neighbour rows: cables, roles and contradictions (traffic/discovery.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from c4.agent.ibnetdiscover import topology_rows
from c4.traffic.discovery import assemble
from c4.traffic.spec import from_spec

CORPUS = Path(__file__).parents[1] / "conformance" / "ibnetdiscover"


def ib_rows(folder: str) -> list[dict]:
    skipped: Counter = Counter()
    rows = topology_rows((CORPUS / folder / "topology.out").read_text(), skipped)
    assert not skipped
    return rows


def lldp(local: str, itf: str, remote: str, port: str, kind: str = "") -> dict:
    """A fabric_neighbors row as the lldp sampler writes it (the fields assembly reads)."""
    return {
        "source": "lldpd",
        "local_system": local,
        "interface": itf,
        "system_name": remote,
        "chassis_id": f"mac-{remote}",
        "neighbor_port": port,
        "neighbor_kind": kind,
        "ts": None,
    }


def both(host: str, itf: str, leaf: str, port: str) -> list[dict]:
    """A host cable as both ends report it."""
    return [lldp(host, itf, leaf, port, "switch"), lldp(leaf, port, host, itf, "host")]


def test_real_ndr_fabric_assembles_host_leaf_spine_from_both_ends():
    found = assemble(ib_rows("topograph-ndr-excerpt"))
    by_ends = {((x.a_system, x.a_port), (x.b_system, x.b_port)): x for x in found.links}
    host = by_ends[(("a08-p1-dgx-04-c17", "mlx5_5/1"), ("A09-P1-IBLEAF-04-04", "17"))]
    assert (host.tier, host.seen_from, host.sources) == ("host_leaf", "both", "ibnetdiscover")
    up = by_ends[(("A09-P1-IBLEAF-04-04", "35"), ("A10-P1-IBSPINE-02", "32"))]
    assert (up.tier, up.seen_from) == ("leaf_spine", "both")
    assert found.roles["A09-P1-IBLEAF-04-04"] == "leaf"
    assert found.roles["a08-p1-dgx-04-c01"] == "host"
    # the excerpt keeps 17 host blocks of this leaf: each of their cables is seen from both ends
    assert sum(x.seen_from == "both" and x.tier == "host_leaf" for x in found.links) == 17
    # the spine's block lists leaves whose blocks were cut: those cables are seen from one end, not contradicted
    assert not [c for c in found.contradictions if c.kind != "rail_mismatch"]


def test_two_ends_that_disagree_are_a_mismatch_and_a_silent_port_is_one_sided():
    rows = [
        lldp("h0", "eth0", "leaf0", "swp1", "switch"),
        lldp("leaf0", "swp1", "h9", "eth0", "host"),  # leaf0 sees another host on that port
        lldp("h1", "eth0", "leaf0", "swp2", "switch"),  # leaf0 reports nothing on swp2
    ]
    kinds = {(c.kind, c.system, c.port) for c in assemble(rows).contradictions}
    assert ("mismatch", "h0", "eth0") in kinds
    assert ("one_sided", "leaf0", "swp2") in kinds


def test_a_far_end_that_reports_nothing_is_no_contradiction():
    found = assemble([lldp("h0", "eth0", "leaf0", "swp1", "switch")])
    assert [x.seen_from for x in found.links] == ["a"]
    assert found.contradictions == []


def test_no_majority_on_a_leaf_no_rail_mismatch():
    rows = both("h0", "eth0", "leaf0", "swp1") + both("h0", "eth1", "leaf0", "swp2")
    rows += both("h1", "eth0", "leaf0", "swp3") + both("h1", "eth1", "leaf0", "swp4")
    assert assemble(rows).contradictions == []


def test_yaml_keeps_what_cannot_be_discovered_and_flags_what_disagrees():
    yaml = from_spec(
        {
            "leaves": ["leaf0", "leaf1", "leaf2"],
            "spines": ["spine0"],
            "hosts": {
                "h0": {"nics": [{"leaf": "leaf0", "ip": "10.0.0.1", "ifname": "eth0"}]},
                "h1": {"nics": [{"leaf": "leaf0", "ip": "10.0.0.2"}, {"leaf": "leaf0", "ip": "10.0.1.2"}]},
                "h5": {"nics": [{"leaf": "leaf2", "ip": "10.0.0.5"}]},
            },
            "links": [["leaf0", "spine0", 400], ["leaf1", "spine0", 400], ["leaf2", "spine0", 400]],
        }
    )
    rows = both("h0", "eth0", "leaf1", "swp1") + both("h1", "eth0", "leaf0", "swp2")
    rows += [
        lldp("leaf0", "swp9", "spine0", "swp1", "switch"),
        lldp("spine0", "swp1", "leaf0", "swp9", "switch"),
    ]
    found = assemble(rows, yaml)
    kinds = {(c.kind, c.system, c.expected) for c in found.contradictions}
    assert ("unexpected_neighbor", "h0", "leaf0") in kinds  # eth0 is leaf0's by the YAML
    assert ("missing", "h1", "2 cable(s) to leaf0") in kinds  # one of h1's two cables is not seen
    # nobody reports h5 or leaf2: their cables stay as the YAML declares them
    yaml_only = {(x.a_system, x.b_system, x.tier) for x in found.links if x.seen_from == "yaml"}
    assert yaml_only == {("h5", "leaf2", "host_leaf"), ("leaf2", "spine0", "leaf_spine")}
    # leaf1 - spine0 is declared, leaf1 is discovered (h0's neighbour) but spine0 reports no cable to it
    assert ("missing", "leaf1", "spine0") in kinds


def test_a_cable_of_the_previous_pass_that_is_gone_has_vanished():
    before = assemble(both("h0", "eth0", "leaf0", "swp1") + both("h1", "eth0", "leaf0", "swp2"))
    previous = [x.row() for x in before.links]
    after = assemble(both("h0", "eth0", "leaf0", "swp1"), previous=previous)
    assert [(c.kind, c.system, c.port, c.expected) for c in after.contradictions] == [
        ("vanished", "h1", "eth0", "leaf0/swp2")
    ]
