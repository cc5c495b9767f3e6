"""C4P planner against ECMP and the spraying bound on the cases the theory pins down."""

from __future__ import annotations

import statistics
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from c4.traffic.collectives import Flow, Job, job_flows
from c4.traffic.generators import fat_tree, leaf_spine
from c4.traffic.hashing import FiveTuple, mlx5_sport, switch_hash
from c4.traffic.planner import Planner, split_counts
from c4.traffic.routing import capacities, ecmp_subflows, loads_from_subflows, lower_bound, max_utilization
from c4.traffic.topology import TopologyError

GB = 1e9


def over_bound(topo, flows, plan):
    return plan.max_utilization() / lower_bound(topo, flows)


def ecmp_over_bound(topo, flows, seeds=8):
    cap = capacities(topo)
    b = lower_bound(topo, flows)
    return statistics.mean(
        max_utilization(loads_from_subflows(len(cap), ecmp_subflows(topo, flows, s)), cap) / b
        for s in range(seeds)
    )


def test_two_nodes_plan_equals_ecmp():
    topo = leaf_spine(2, 2, 4, nics_per_host=1)
    flows = [Flow("j", "host0", "host1", 0, 0, 0, GB), Flow("j", "host1", "host0", 0, 0, 0, GB)]
    plan = Planner(topo, max_qps=1).plan(flows)
    cap = capacities(topo)
    assert plan.max_utilization() == pytest.approx(
        max_utilization(loads_from_subflows(len(cap), ecmp_subflows(topo, flows, 0)), cap)
    )


def test_permutation_n_equals_s_reaches_the_bound_while_ecmp_collides():
    topo = leaf_spine(64, 4, 16, nics_per_host=1)  # 16 hosts per leaf, 16 spines: 1:1
    flows = job_flows(Job("perm", [f"host{i}" for i in range(64)], shuffle_seed=11, channels=1), topo)
    plan = Planner(topo, max_qps=1).plan(flows)
    assert over_bound(topo, flows, plan) == pytest.approx(1.0)
    assert ecmp_over_bound(topo, flows) > 2.0


@pytest.mark.parametrize(("r", "s", "pieces"), [(3, 4, 4), (12, 16, 4), (4, 4, 1), (6, 4, 2)])
def test_gcd_split_reaches_the_bound_with_minimal_pieces(r, s, pieces):
    topo = leaf_spine(2 * r, 2, s, nics_per_host=1)  # r hosts per leaf, each sends to the other leaf
    flows = [Flow("j", f"host{i}", f"host{r + i}", 0, 0, 0, GB) for i in range(r)]
    assert set(split_counts(topo, flows, max_qps=16)) == {pieces}
    plan = Planner(topo, max_qps=16).plan(flows)
    assert len(plan.pieces) == r * pieces
    assert over_bound(topo, flows, plan) == pytest.approx(1.0)
    uplinks = [topo.link("leaf0", f"spine{i}").id for i in range(s)]
    assert len({round(plan.load[u]) for u in uplinks}) == 1  # every uplink carries the same bytes


@pytest.mark.parametrize("qps", [1, 2, 4])
def test_dual_port_nics_are_balanced(qps):
    topo = leaf_spine(8, 4, 4, nics_per_host=2, ports_per_nic=2, dual_plane=True)
    flows = job_flows(Job("j", [f"host{i}" for i in range(8)], shuffle_seed=2, channels=2, qps=qps), topo)
    plan = Planner(topo, max_qps=max(qps, 2)).plan(flows)
    per_port = defaultdict(float)
    for p in plan.pieces:
        per_port[p.src_port.name] += p.bytes
    for host in topo.hosts.values():
        for nic in host.nics:
            a, b = (per_port[port.name] for port in nic)
            assert a == pytest.approx(b), f"{nic[0].name} unbalanced: {a} vs {b}"
    assert {p.src_port.port for p in plan.pieces} == {0, 1}


def test_replan_after_failure_moves_only_affected_pieces():
    topo = leaf_spine(64, 4, 16, nics_per_host=1)
    flows = job_flows(Job("j", [f"host{i}" for i in range(64)], shuffle_seed=5, channels=1, qps=1), topo)
    planner = Planner(topo, max_qps=1)
    plan = planner.plan(flows)
    before = {id(p): list(p.nodes) for p in plan.pieces}
    on_failed = [
        p
        for p in plan.pieces
        if "leaf1" in p.nodes
        and "spine3" in p.nodes
        and abs(p.nodes.index("spine3") - p.nodes.index("leaf1")) == 1
    ]
    topo.set_state("leaf1", "spine3", "down")
    planner.replan(plan)
    down = {topo.link("leaf1", "spine3").id, topo.link("spine3", "leaf1").id}
    assert plan.churn == len(on_failed) > 0
    assert not any(set(p.links) & down for p in plan.pieces)
    moved = [p for p in plan.pieces if p.nodes != before[id(p)]]
    assert {id(p) for p in moved} <= {id(p) for p in on_failed}
    assert over_bound(topo, flows, plan) <= 2.0


def test_oversubscribed_and_three_tier():
    topo = leaf_spine(64, 4, 8, nics_per_host=1, oversubscription=2.0)
    flows = job_flows(Job("j", [f"host{i}" for i in range(64)], shuffle_seed=3, channels=1), topo)
    plan = Planner(topo, max_qps=8).plan(flows)  # s / gcd(r, s) <= 8 pieces: exactly the bound
    assert over_bound(topo, flows, plan) == pytest.approx(1.0)
    assert ecmp_over_bound(topo, flows) > over_bound(topo, flows, plan)
    ft = fat_tree(pods=2, leaves_per_pod=2, aggs_per_pod=2, cores=4, hosts_per_leaf=4)
    flows = job_flows(Job("j", [f"host{i}" for i in range(16)], shuffle_seed=3, channels=1), ft)
    plan = Planner(ft, max_qps=4).plan(flows)
    assert over_bound(ft, flows, plan) <= 1.1
    assert ecmp_over_bound(ft, flows) > over_bound(ft, flows, plan)


def test_source_ports_steer_the_hashes_onto_the_planned_paths():
    topo = fat_tree(pods=2, leaves_per_pod=2, aggs_per_pod=2, cores=4, hosts_per_leaf=2)
    flows = job_flows(Job("j", [f"host{i}" for i in range(8)], shuffle_seed=9, channels=1), topo)
    planner = Planner(topo, max_qps=4)
    plan = planner.plan(flows)
    for p in plan.pieces:
        assert 0xC000 <= p.sport <= 0xFFFF
        t = FiveTuple(p.src_port.ip, p.dst_port.ip, p.sport)
        cur, nodes = p.src_port.leaf, [p.src_port.name, p.src_port.leaf]
        while cur != p.dst_port.leaf:
            nexts = sorted(topo.next_hops(cur, p.dst_port.leaf))
            cur = nexts[planner._hasher(cur).pick(t, len(nexts))]
            nodes.append(cur)
        assert nodes + [p.dst_port.name] == p.nodes


def test_mlx5_source_port_derivation():
    # lqpn * rqpn below 2^20 is not folded: fl = 15, sport = (15 & 0x3FFF) ^ (15 >> 14) | 0xC000
    assert mlx5_sport(3, 5) == 0xC00F
    # 0x4001 * 1: low 14 bits 0x0001, bits 14-19 = 0x1 -> 0x0001 ^ 0x1 = 0 -> 0xC000
    assert mlx5_sport(0x4001, 1) == 0xC000
    assert all(0xC000 <= mlx5_sport(a, b) <= 0xFFFF for a in range(1, 200, 7) for b in range(1, 300, 11))


def test_switch_hashes_are_seeded_and_deterministic():
    t = FiveTuple("10.0.0.1", "10.0.0.2", 50000)
    h1, h2 = switch_hash("leaf0"), switch_hash("leaf1")
    assert h1(t) == switch_hash("leaf0")(t) and h1(t) != h2(t)
    assert switch_hash("leaf0", "xor")(t) != h1(t)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hosts=st.integers(2, 24),
    leaves=st.integers(1, 4),
    spines=st.integers(1, 6),
    qps=st.integers(1, 4),
    seed=st.integers(0, 1000),
    collective=st.sampled_from(["allreduce_ring", "allreduce_tree", "alltoall"]),
    fail=st.booleans(),
    wiring=st.sampled_from(["single", "dual_tor", "dual_plane"]),
    later=st.integers(0, 5),
)
def test_every_byte_routed_once_on_existing_up_links(
    hosts, leaves, spines, qps, seed, collective, fail, wiring, later
):
    if wiring == "single":
        topo = leaf_spine(hosts, leaves, spines, nics_per_host=1)
    else:
        topo = leaf_spine(
            hosts,
            2 * -(-leaves // 2),
            2 * -(-spines // 2),
            nics_per_host=1,
            ports_per_nic=2,
            **{wiring: True},
        )
    if fail and spines > 1 and leaves > 1:
        topo.set_state("leaf0", "spine0", "down")
    flows = job_flows(
        Job(
            "j",
            [f"host{i}" for i in range(hosts)],
            collective=collective,
            shuffle_seed=seed,
            channels=1,
            qps=qps,
        ),
        topo,
    )
    planner = Planner(topo, max_qps=4)
    plan = planner.plan(flows)
    check_plan(topo, flows, plan)
    # a second failure later: replanning keeps every invariant
    leaf = topo.leaves[later % len(topo.leaves)]
    spine = [s for s in topo.spines if topo.has_link(leaf, s)][later % 2 if len(topo.spines) > 2 else 0]
    topo.set_state(leaf, spine, "down")
    try:
        planner.replan(plan)
    except TopologyError:
        return  # the failure cut a leaf (or plane) off: nothing can route there
    check_plan(topo, flows, plan)
    assert len({(p.flow, p.qp) for p in plan.pieces}) == len(plan.pieces)


def check_plan(topo, flows, plan):
    """Every byte of every flow exactly once, on live links; the ledger equals the pieces."""
    per_flow = defaultdict(float)
    for p in plan.pieces:
        per_flow[p.flow] += p.bytes
        assert p.nodes[0] == p.src_port.name and p.nodes[-1] == p.dst_port.name
        for a, b in zip(p.nodes, p.nodes[1:], strict=False):
            assert topo.live(a, b), f"{a}->{b} not a live link"
    for i, f in enumerate(flows):
        assert per_flow[i] == pytest.approx(f.bytes)
    expected = defaultdict(float)
    for p in plan.pieces:
        for lid in p.links:
            expected[lid] += p.bytes
    assert all(plan.load[lid] == pytest.approx(v) for lid, v in expected.items())
    assert plan.max_utilization() >= lower_bound(topo, flows) * (1 - 1e-9)
