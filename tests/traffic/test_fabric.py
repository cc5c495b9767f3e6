"""Fabric specs, dual-homed NICs, placement, destination-side splitting, replanning with splits, probed sports."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from c4.traffic.collectives import Flow, Job, job_flows
from c4.traffic.generators import fat_tree, leaf_spine, rail_optimized
from c4.traffic.hashing import SPORT_MAX, SPORT_MIN, FiveTuple, switch_hash
from c4.traffic.placement import place
from c4.traffic.planner import Planner, split_counts
from c4.traffic.probing import probe_table, trace
from c4.traffic.routing import lower_bound
from c4.traffic.topology import TopologyError, load_yaml

GB = 1e9
EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def over_bound(topo, flows, plan):
    return plan.max_utilization() / lower_bound(topo, flows)


def write(tmp_path, text):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return path


def test_explicit_spec_loads_with_links_states_and_dual_homed_ports():
    topo = load_yaml(EXAMPLES / "topology-dual-tor.yaml")
    assert topo.leaves == ["leaf0", "leaf1", "leaf2", "leaf3"] and len(topo.hosts) == 4
    nic = topo.hosts["host1"].nics[0]
    assert [(p.leaf, p.ip) for p in nic] == [("leaf0", "10.0.1.1"), ("leaf1", "10.0.1.2")]
    assert (
        topo.link("leaf1", "spine1").usable_gbps == 200 and topo.link("spine1", "leaf1").state == "degraded"
    )
    assert topo.link("host0/nic0p0", "leaf0").capacity_gbps == 200


BASE = """
leaves: [leaf0, leaf1]
spines: [spine0]
hosts:
  h0: {nics: [[{leaf: leaf0, ip: 10.0.0.1}]]}
  h1: {nics: [[{leaf: LEAF1, ip: IP1}]]}
links: [[leaf0, spine0, 400], [leaf1, SPINE, 400]]
"""


@pytest.mark.parametrize(
    ("subs", "needle"),
    [
        ({"LEAF1": "leaf7"}, "h1/nic0p0: leaf 'leaf7' is not declared"),
        ({"IP1": "10.0.0.1"}, "h1/nic0p0: ip 10.0.0.1 already used by h0/nic0p0"),
        ({"SPINE": "spine9"}, "links[1] leaf1<->spine9: 'spine9' is not a declared switch"),
    ],
)
def test_explicit_spec_errors_name_the_element(tmp_path, subs, needle):
    text = BASE
    for k, v in {"LEAF1": "leaf1", "IP1": "10.0.0.2", "SPINE": "spine0", **subs}.items():
        text = text.replace(k, v)
    with pytest.raises(TopologyError) as exc:
        load_yaml(write(tmp_path, text))
    assert needle in str(exc.value)


def test_generator_arguments_are_checked(tmp_path):
    with pytest.raises(TopologyError, match=r"leaf_spine has no argument\(s\) \['hostz'\]"):
        load_yaml(write(tmp_path, "generator: leaf_spine\nargs: {hostz: 4, leaves: 2, spines: 2}\n"))
    with pytest.raises(TopologyError, match="degraded link needs a positive rate_gbps"):
        load_yaml(
            write(
                tmp_path,
                "generator: leaf_spine\nargs: {hosts: 4, leaves: 2, spines: 2}\n"
                "failures: [{link: [leaf0, spine1], state: degraded}]\n",
            )
        )


def test_dual_plane_keeps_each_port_in_its_plane():
    topo = rail_optimized(hosts=8, groups=1, spines=4, rails=2, ports_per_nic=2, dual_plane=True)
    assert len(topo.leaves) == 4
    for leaf_i, leaf in enumerate(topo.leaves):
        reach = {s for s in topo.spines if topo.has_link(leaf, s)}
        assert reach == {s for j, s in enumerate(topo.spines) if j % 2 == leaf_i % 2}
    for host in topo.hosts.values():
        for n, nic in enumerate(host.nics):
            assert [p.plane for p in nic] == [0, 1]
            assert {topo.leaves.index(p.leaf) // 2 for p in nic} == {n}  # rail n's leaves
    flows = job_flows(Job("j", [f"host{i}" for i in range(8)], shuffle_seed=1, channels=2), topo)
    plan = Planner(topo, max_qps=4).plan(flows)
    for p in plan.pieces:
        assert p.src_port.port == p.dst_port.port
        assert all(topo.spines.index(s) % 2 == p.src_port.plane for s in p.nodes if s in topo.spines)
    assert over_bound(topo, flows, plan) == pytest.approx(1.0)


def test_dual_tor_pairs_share_spines_and_balance_ports():
    topo = leaf_spine(8, 4, 4, nics_per_host=1, ports_per_nic=2, dual_tor=True)
    assert {p.leaf for p in topo.hosts["host0"].nics[0]} == {"leaf0", "leaf1"}
    assert all(topo.has_link(leaf, s) for leaf in topo.leaves for s in topo.spines)
    flows = job_flows(Job("j", [f"host{i}" for i in range(8)], shuffle_seed=4, channels=1, qps=2), topo)
    plan = Planner(topo, max_qps=4).plan(flows)
    tx = defaultdict(float)
    for p in plan.pieces:
        tx[p.src_port.name] += p.bytes
    for host in topo.hosts.values():
        a, b = (tx[p.name] for p in host.nics[0])
        assert a == pytest.approx(b)
    assert over_bound(topo, flows, plan) == pytest.approx(1.0)


def test_placement_is_rail_aligned():
    topo = leaf_spine(4, 2, 2, nics_per_host=4)
    ranks = place(Job("j", ["host2", "host0"], gpus_per_host=8), topo)
    assert [r.rank for r in ranks] == list(range(16))
    assert [(r.host, r.gpu, r.nic) for r in ranks[:3]] == [("host2", 0, 0), ("host2", 1, 0), ("host2", 2, 1)]
    assert {r.nic for r in ranks if r.host == "host0"} == {0, 1, 2, 3}
    with pytest.raises(TopologyError, match="host9"):
        place(Job("j", ["host9"]), topo)


def test_destination_leaf_with_a_dead_downlink_is_split_too():
    topo = leaf_spine(32, 2, 16, nics_per_host=1)
    topo.set_state("leaf1", "spine0", "down")  # 16 flows into leaf1 over 15 live downlinks
    flows = [Flow("j", f"host{i}", f"host{16 + i}", 0, 0, 0, GB) for i in range(16)]
    counts = split_counts(topo, flows, max_qps=16)
    assert set(counts) == {15}
    plan = Planner(topo, max_qps=16).plan(flows)
    assert over_bound(topo, flows, plan) == pytest.approx(1.0)


def test_replan_splits_the_moved_piece_to_reach_the_new_bound():
    topo = leaf_spine(32, 2, 16, nics_per_host=1)
    flows = [Flow("j", f"host{i}", f"host{16 + i}", 0, 0, 0, GB) for i in range(16)]
    planner = Planner(topo, max_qps=16)
    plan = planner.plan(flows)
    assert len(plan.pieces) == 16 and over_bound(topo, flows, plan) == pytest.approx(1.0)
    victim = next(p for p in plan.pieces if "spine0" in p.nodes)
    untouched = {id(p): list(p.nodes) for p in plan.pieces if p is not victim}
    topo.set_state("leaf0", "spine0", "down")
    planner.replan(plan)
    assert plan.added == 14 and plan.churn == 15 and len(plan.pieces) == 30
    assert all(list(p.nodes) == untouched[id(p)] for p in plan.pieces if id(p) in untouched)
    assert over_bound(topo, flows, plan) == pytest.approx(1.0)
    per_flow = defaultdict(float)
    for p in plan.pieces:
        per_flow[(p.src, p.dst)] += p.bytes
    assert all(b == pytest.approx(GB) for b in per_flow.values())
    assert len({(p.flow, p.qp) for p in plan.pieces}) == len(plan.pieces)


def test_three_tier_bound_counts_the_core_cut():
    ft = fat_tree(pods=2, leaves_per_pod=2, aggs_per_pod=2, cores=2, hosts_per_leaf=4, link_gbps=400)
    # 8 hosts per pod at 400G, but only 2 aggs x 2 cores x 400G = 1600G out of a pod: 2:1 at the core
    flows = [Flow("j", f"host{i}", f"host{8 + i}", 0, 0, 0, GB) for i in range(8)]
    assert lower_bound(ft, flows) == pytest.approx(8 * GB / (1600e9 / 8))
    plan = Planner(ft, max_qps=4).plan(flows)
    assert over_bound(ft, flows, plan) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["crc32", "xor"])
def test_probed_sport_table_drives_the_planned_sports(kind):
    topo = leaf_spine(8, 2, 4, nics_per_host=1)
    flows = job_flows(Job("j", [f"host{i}" for i in range(8)], shuffle_seed=2, channels=1), topo)
    pairs = {(topo.port(f.src, 0).ip, topo.port(f.dst, 0).ip) for f in flows}
    hashers = {}

    def hasher_for(sw):
        return hashers.setdefault(sw, switch_hash(sw, kind, 3))

    table = probe_table(topo, pairs, range(SPORT_MIN, SPORT_MIN + 512), hasher_for)
    for paths in table.values():  # every spine seen for leaf-to-leaf pairs, one path within a leaf
        assert len(paths) == 4 or {len(path) for path in paths} == {1}
    plan = Planner(topo, max_qps=4, hash_kind=kind, hash_seed=3, sport_table=table).plan(flows)
    for p in plan.pieces:
        assert SPORT_MIN <= p.sport < SPORT_MIN + 512  # taken from the probed range
        assert trace(topo, p.src_port.ip, p.dst_port.ip, p.sport, hasher_for) == tuple(p.nodes[1:-1])


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["crc32", "xor"]),
    seed=st.integers(0, 2**32 - 1),
    a=st.integers(0, 2**32 - 1),
    b=st.integers(0, 2**32 - 1),
    n=st.integers(1, 64),
    sport=st.integers(SPORT_MIN, SPORT_MAX),
)
def test_fast_sport_picker_equals_the_full_hash(kind, seed, a, b, n, sport):
    ip = lambda x: ".".join(str((x >> s) & 255) for s in (24, 16, 8, 0))  # noqa: E731
    h = switch_hash("leaf0", kind, seed)
    assert h.sport_picker(ip(a), ip(b), n)(sport) == h.pick(FiveTuple(ip(a), ip(b), sport), n)
