"""C4P pieces: each NIC port's own leaf decides its cuts (multi-plane failures), and the fewest pieces reach the bound."""

from __future__ import annotations

from collections import defaultdict

import highspy
import numpy as np
import pytest
from test_planner import check_plan

from c4.traffic.collectives import Flow, Job, job_flows
from c4.traffic.generators import leaf_spine, rail_optimized
from c4.traffic.minmax_lp import min_max_fractions
from c4.traffic.planner import Planner, split_counts
from c4.traffic.routing import capacities, live_paths, lower_bound, path_links
from c4.traffic.splitting import fewest_cuts, packed_peak_s

GB = 1e9


def lp_optimum_s(topo, flows) -> float:
    """The least max link utilization (seconds) of any fractional routing over every live port pair and path."""
    cap = capacities(topo)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    t = h.addVariable(lb=0)
    demand: dict[tuple, float] = defaultdict(float)
    for f in flows:
        demand[(f.src, f.src_nic, f.dst, f.dst_nic)] += f.bytes
    on_link: dict[int, list] = defaultdict(list)
    for (src, sn, dst, dn), b in demand.items():
        xs = []
        for a in topo.hosts[src].nics[sn]:
            for d in topo.hosts[dst].nics[dn]:
                for nodes in live_paths(topo, a, d):
                    x = h.addVariable(lb=0)
                    xs.append(x)
                    for lid in path_links(topo, nodes):
                        on_link[lid].append((x, b))
        h.addConstr(sum(xs) == 1)
    for lid, terms in on_link.items():  # per unit of capacity: bytes (1e9) beside seconds (0.3) mis-solve
        h.addConstr(sum(b / float(cap[lid]) * x for x, b in terms) - t <= 0)
    h.minimize(t)
    return h.val(t)


def dual_plane_two_links_down(seed: int = 1):
    """deploy/examples/topology-rail.yaml's fabric (16 hosts, 4 rails x 2 planes x 2 groups) with rail 0's
    plane-0 leaves of both groups (leaf0, leaf8) each missing their link to spine0."""
    topo = rail_optimized(hosts=16, groups=2, spines=8, rails=4, ports_per_nic=2, dual_plane=True)
    topo.set_state("leaf0", "spine0", "down")
    topo.set_state("leaf8", "spine0", "down")
    flows = job_flows(Job("j", [f"host{i}" for i in range(16)], shuffle_seed=seed, channels=4), topo)
    return topo, flows


@pytest.mark.parametrize("seed", [1, 4, 7, 9])
def test_dual_plane_with_two_links_down_plans_within_5pct_of_the_bound(seed):
    topo, flows = dual_plane_two_links_down(seed)
    bound = lower_bound(topo, flows)
    assert lp_optimum_s(topo, flows) / bound == pytest.approx(1.0, abs=1e-6)  # the bound is reachable
    plan = Planner(topo, max_qps=8).plan(flows)
    check_plan(topo, flows, plan)
    assert plan.max_utilization() / bound <= 1.05  # the first-port rule planned these at 1.333


def test_where_the_bound_is_out_of_reach_the_plan_stays_within_5pct_of_the_lp():
    # leaf0 (rail 0, plane 0) keeps 2 of its 4 uplinks: the NIC-port bound cannot be met (LP 1.111)
    topo = rail_optimized(hosts=16, groups=2, spines=8, rails=4, ports_per_nic=2, dual_plane=True)
    topo.set_state("leaf0", "spine0", "down")
    topo.set_state("leaf0", "spine2", "down")
    flows = job_flows(Job("j", [f"host{i}" for i in range(16)], shuffle_seed=7, channels=8), topo)
    lp = lp_optimum_s(topo, flows)
    assert lp / lower_bound(topo, flows) == pytest.approx(10 / 9, abs=1e-4)
    plan = Planner(topo, max_qps=8).plan(flows)
    check_plan(topo, flows, plan)
    assert plan.max_utilization() / lp <= 1.05  # whole-piece moves alone stopped at 1.125 x the LP
    assert len({(p.flow, p.qp) for p in plan.pieces}) == len(plan.pieces)  # split halves get their own QP


def test_each_port_share_is_cut_by_its_own_leaf():
    topo, flows = dual_plane_two_links_down()
    planner = Planner(topo, max_qps=8)
    for f, shares in zip(flows, planner.shares(flows), strict=True):
        assert [(s.src.port, s.dst.port) for s in shares] == [(0, 0), (1, 1)]  # one share per plane
        assert {s.src.plane for s in shares} == {0, 1}
        assert sum(s.bytes for s in shares) == pytest.approx(f.bytes)
        for s in shares:
            assert s.src.leaf == topo.hosts[f.src].nics[f.src_nic][s.src.port].leaf
    plan = planner.plan(flows)
    for p in plan.pieces:  # every piece leaves and enters through the plane of its share
        assert p.src_port.plane == p.dst_port.plane
        assert all(topo.live(a, b) for a, b in zip(p.nodes, p.nodes[1:], strict=False))


def test_ring_with_8_qps_allowed_keeps_one_piece_per_connection():
    topo = leaf_spine(128, 8, 16, nics_per_host=1)
    flows = job_flows(Job("j", [f"host{i}" for i in range(128)], shuffle_seed=1, channels=1, qps=1), topo)
    plan = Planner(topo, max_qps=8).plan(flows)
    assert plan.max_utilization() / lower_bound(topo, flows) == pytest.approx(1.0)
    assert len(plan.pieces) == len(flows) == 128  # the gcd rule alone cut this ring into 926 pieces
    assert {p.qp for p in plan.pieces} == {0}


def test_pieces_follow_the_binding_cut():
    # r = 3 flows over s = 4 uplinks of 3/4 a NIC each: the uplinks bind, the gcd rule's 4 pieces
    topo = leaf_spine(6, 2, 4, nics_per_host=1)
    flows = [Flow("j", f"host{i}", f"host{3 + i}", 0, 0, 0, GB) for i in range(3)]
    assert split_counts(topo, flows, max_qps=8) == [4, 4, 4]
    # the same 3 flows on 4 full-rate uplinks (8 hosts per leaf): the NIC binds, one piece each
    topo = leaf_spine(16, 2, 4, nics_per_host=1)
    flows = [Flow("j", f"host{i}", f"host{8 + i}", 0, 0, 0, GB) for i in range(3)]
    assert split_counts(topo, flows, max_qps=8) == [1, 1, 1]
    plan = Planner(topo, max_qps=8).plan(flows)
    assert plan.max_utilization() / lower_bound(topo, flows) == pytest.approx(1.0)


def test_fewest_cuts_and_packing():
    caps = np.array([1.0, 1.0, 1.0, 1.0])
    assert packed_peak_s([1.0] * 5, caps) == 2.0  # 5 equal pieces on 4 links: one link carries 2
    assert (
        packed_peak_s([3.0, 1.0, 1.0, 1.0], np.array([3.0, 1.0, 1.0, 1.0])) == 1.0
    )  # largest on the big link
    # 3 shares of 1 over 4 links of 0.75 within 1 s: the gcd rule's 4 cuts (3/4 per link)
    assert fewest_cuts([1.0] * 3, np.full(4, 0.75), 1.0, 8) == 4
    # no k <= 2 reaches 1 s: the k with the lowest packed peak
    assert fewest_cuts([1.0] * 3, np.full(4, 0.75), 1.0, 2) == 1
    assert fewest_cuts([1.0] * 3, np.full(4, 1.0), 1.0, 8) == 1


def dual_plane_tight(seed: int = 15):
    """c4 bench plan's dual_plane_tight_2_links_down: 8 hosts on 4 leaf pairs (2 planes), every leaf's 8 uplinks
    tight at the bound, one uplink down in each plane (leaf3-spine13 on plane 1, leaf6-spine10 on plane 0)."""
    topo = rail_optimized(hosts=8, groups=4, spines=16, rails=1, ports_per_nic=2, dual_plane=True)
    topo.set_state("leaf3", "spine13", "down")
    topo.set_state("leaf6", "spine10", "down")
    flows = job_flows(Job("j", [f"host{i}" for i in range(8)], shuffle_seed=seed, channels=2, qps=2), topo)
    return topo, flows


def cut_bound_s(topo, flows) -> float:
    """The busiest cut, by hand: each NIC's ports (send, receive) and its leaf pair's live uplinks and downlinks."""
    gbps = 1e9 / 8
    out, inn, up, down = defaultdict(float), defaultdict(float), defaultdict(float), defaultdict(float)
    for f in flows:
        src = frozenset(p.leaf for p in topo.hosts[f.src].nics[f.src_nic])
        dst = frozenset(p.leaf for p in topo.hosts[f.dst].nics[f.dst_nic])
        out[(f.src, f.src_nic)] += f.bytes
        inn[(f.dst, f.dst_nic)] += f.bytes
        if not src & dst:
            up[src] += f.bytes
            down[dst] += f.bytes
    worst = 0.0
    for (h, n), b in [*out.items(), *inn.items()]:
        worst = max(
            worst, b / sum(topo.link(p.name, p.leaf).usable_gbps * gbps for p in topo.hosts[h].nics[n])
        )
    for leaves, b in up.items():
        live = [lk for lk in topo.links if lk.src in leaves and lk.dst in topo.spines]
        worst = max(worst, b / sum(lk.usable_gbps * gbps for lk in live))
    for leaves, b in down.items():
        live = [lk for lk in topo.links if lk.dst in leaves and lk.src in topo.spines]
        worst = max(worst, b / sum(lk.usable_gbps * gbps for lk in live))
    return worst


def check_limits(plan, max_qps: int) -> None:
    """At most max_qps pieces per connection, each with its own QP number."""
    per_flow = defaultdict(list)
    for p in plan.pieces:
        per_flow[p.flow].append(p.qp)
    assert max(len(q) for q in per_flow.values()) <= max_qps
    assert all(len(set(q)) == len(q) for q in per_flow.values())


def test_tight_dual_plane_case_plans_within_5pct_of_its_bound():
    topo, flows = dual_plane_tight()
    bound = cut_bound_s(topo, flows)
    assert bound == pytest.approx(lower_bound(topo, flows))
    assert lp_optimum_s(topo, flows) / bound == pytest.approx(45 / 44, abs=1e-6)  # 1.0227: the best reachable
    plan = Planner(topo, max_qps=8).plan(flows)
    check_plan(topo, flows, plan)  # every piece on live links only, every byte once
    check_limits(plan, 8)
    assert plan.max_utilization() / bound <= 1.05  # greedy + repair stopped at 1.172
    # the bytes shift between planes: equal halves per plane cannot beat 15/14 of the bound here
    plane0 = defaultdict(float)
    for p in plan.pieces:
        if p.src_port.plane == 0:
            plane0[p.flow] += p.bytes / flows[p.flow].bytes
    assert max(abs(x - 0.5) for x in plane0.values()) > 0.1


def test_tight_dual_plane_replan_after_a_further_failure_keeps_the_invariants():
    topo, flows = dual_plane_tight()
    planner = Planner(topo, max_qps=8)
    plan = planner.plan(flows)
    before = len(plan.pieces)
    busiest = max(
        (lk for lk in topo.links if lk.src in topo.leaves and lk.dst in topo.spines),
        key=lambda lk: plan.load[lk.id],
    )
    topo.set_state(busiest.src, busiest.dst, "down")
    planner.replan(plan)
    assert plan.churn > 0
    check_plan(topo, flows, plan)  # nothing left on the dead cable, bytes conserved, ledger equal to pieces
    check_limits(plan, 8)
    assert len(plan.pieces) == before + plan.added
    assert all(p.sport for p in plan.pieces)


def test_min_max_fractions_splits_and_respects_the_path_limit():
    cap = np.array([1.0, 1.0, 2.0])
    # one connection of 3 bytes over links 0, 1, 2: the optimum fills each to the same 0.75 s
    (x,) = min_max_fractions([3.0], [[[0], [1], [2]]], cap, max_paths=3)
    assert x == pytest.approx([0.25, 0.25, 0.5])
    # two paths at most: the largest two kept, the LP solved again over them (1 s on each)
    (x,) = min_max_fractions([3.0], [[[0], [1], [2]]], cap, max_paths=2)
    assert np.count_nonzero(x) == 2 and x.sum() == pytest.approx(1.0)
    assert max(3.0 * x / cap) == pytest.approx(1.0)
    # a second connection that can only use link 2 pushes the first onto links 0 and 1
    x, y = min_max_fractions([3.0, 2.0], [[[0], [1], [2]], [[2]]], cap, max_paths=3)
    assert y == pytest.approx([1.0])
    assert x == pytest.approx([5 / 12, 5 / 12, 1 / 6])  # every link at 1.25 s


def test_the_nccl_env_file_warns_when_stock_nccl_cannot_carry_the_plan():
    """The tight case's plan shifts bytes between planes: its nccl-env file says stock NCCL's even split
    cannot carry it; an even plan's file does not."""
    from c4.traffic.apply.nccl_env import nccl_env_file
    from c4.traffic.even_split import uneven_connections

    topo, flows = dual_plane_tight()
    plan = Planner(topo, max_qps=8).plan(flows)
    assert uneven_connections(plan)
    assert "WARNING: " in nccl_env_file(plan) and "weights its QPs" in nccl_env_file(plan)
    even_topo = leaf_spine(16, 4, 4, nics_per_host=1)
    even = Planner(even_topo, max_qps=4).plan(job_flows(Job("j", [f"host{i}" for i in range(16)]), even_topo))
    assert not uneven_connections(even) and "WARNING" not in nccl_env_file(even)
