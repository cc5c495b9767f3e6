"""Which plan connections stock NCCL's even split (equal QPs, equal shares per NIC port) can carry."""

from __future__ import annotations

import numpy as np
from test_planner_pieces import dual_plane_tight

from c4.traffic.collectives import Flow, Job, job_flows
from c4.traffic.even_split import uneven_connections
from c4.traffic.generators import leaf_spine, rail_optimized
from c4.traffic.planner import Piece, Plan, Planner

GB = 1e9


def one_connection(sizes_by_port: dict[int, list[float]]) -> Plan:
    """A plan of host0 -> host2 on a 2-plane fabric with the given piece sizes (GB) on each NIC port."""
    topo = rail_optimized(hosts=4, groups=2, spines=4, rails=1, ports_per_nic=2, dual_plane=True)
    total = sum(sum(v) for v in sizes_by_port.values())
    flow = Flow("j", "host0", "host2", 0, 0, 0, total * GB)
    pieces = []
    for port, sizes in sizes_by_port.items():
        a, b = topo.hosts["host0"].nics[0][port], topo.hosts["host2"].nics[0][port]
        for size in sizes:
            pieces.append(Piece(0, "j", "host0", "host2", 0, len(pieces), size * GB, a, b))
    return Plan(topo, [flow], pieces, np.zeros(len(topo.links)))


def test_equal_shares_per_port_in_whole_qps_are_even():
    assert uneven_connections(one_connection({0: [1.0], 1: [1.0]})) == []
    # 3 pieces on one port, 2 on the other: 6 QPs per port (1/6 each) carry both
    assert uneven_connections(one_connection({0: [1 / 3] * 3, 1: [0.5, 0.5]})) == []
    # a piece of two QPs beside two of one QP on the same port
    assert uneven_connections(one_connection({0: [0.5, 0.25, 0.25], 1: [1.0]})) == []
    # 0.7 and 0.3 of a port are 7 and 3 QPs of 10 (the smallest piece is not the unit)
    assert uneven_connections(one_connection({0: [0.7, 0.3], 1: [1.0]})) == []


def test_unequal_port_shares_or_pieces_are_uneven():
    assert uneven_connections(one_connection({0: [1.2], 1: [0.8]})) == [0]  # 60/40 over the planes
    assert uneven_connections(one_connection({0: [2.0]})) == [0]  # port 1 is live: NCCL would use it
    r = 1 - 1 / np.sqrt(2)  # no whole number of 1..128 QPs per port makes these two pieces
    assert uneven_connections(one_connection({0: [r, 1 - r], 1: [1.0]})) == [0]


def test_greedy_plans_are_even_and_the_lp_plan_of_the_tight_dual_plane_case_is_not():
    topo = leaf_spine(32, 4, 8, nics_per_host=1)
    flows = job_flows(Job("j", [f"host{i}" for i in range(32)], shuffle_seed=3, channels=2), topo)
    assert uneven_connections(Planner(topo, max_qps=8).plan(flows, sports=False)) == []
    topo, flows = dual_plane_tight()
    uneven = uneven_connections(Planner(topo, max_qps=8).plan(flows, sports=False))
    assert len(uneven) == len(flows)  # every connection shifts bytes between its planes
