"""Replanning a stored plan: the plan back from its rows, the new plan on the failed fabric, what moved,
and a degraded cable's rate from C4D's throughput ratio."""

from __future__ import annotations

import numpy as np
import pytest

from c4.traffic.collectives import Job, job_flows
from c4.traffic.export import moved_pieces, plan_rows, stored_routes
from c4.traffic.generators import leaf_spine
from c4.traffic.planner import Planner
from c4.traffic.replanning import degraded_rate_gbps, plan_from_rows, replan
from c4.traffic.routing import lower_bound
from c4.traffic.topology import TopologyError


def fabric_and_rows():
    """A shuffled 16-host ring over 4 leaves x 4 spines: its cross-leaf bytes fill the uplinks."""
    topo = leaf_spine(16, 4, 4, nics_per_host=2)
    flows = job_flows(
        Job("ring", list(topo.hosts), channels=2, qps=1, message_bytes=1 << 30, shuffle_seed=1), topo
    )
    plan = Planner(topo, max_qps=4).plan(flows)
    return topo, flows, plan, plan_rows(plan, "p0", 1.0)


def test_a_plan_comes_back_from_its_rows():
    topo, flows, plan, rows = fabric_and_rows()
    back = plan_from_rows(leaf_spine(16, 4, 4, nics_per_host=2), rows)
    assert np.allclose(back.load, plan.load)
    assert back.max_utilization() == pytest.approx(plan.max_utilization())
    assert sorted((f.src, f.dst, f.channel, f.bytes) for f in back.flows) == sorted(
        (f.src, f.dst, f.channel, f.bytes) for f in flows
    )
    assert moved_pieces(back, stored_routes(rows)) == 0
    with pytest.raises(TopologyError, match="not in the fabric"):
        plan_from_rows(topo, [{**rows[0], "src_port": "host99/nic0p0"}])
    with pytest.raises(TopologyError, match="no link"):
        plan_from_rows(topo, [{**rows[0], "path": "leaf0>leaf1"}])


def test_a_dead_spine_link_moves_only_its_pieces_back_to_the_bound():
    topo, flows, plan, rows = fabric_and_rows()
    crossing = [r for r in rows if "leaf0>spine0" in r["path"] or "spine0>leaf0" in r["path"]]
    assert crossing
    topo.set_state("leaf0", "spine0", "down")
    r = replan(topo, rows)
    assert r.how == "moved" and r.moved_pieces >= len(crossing)
    assert r.moved_pieces < len(rows) / 2  # the rest stay where they were
    assert r.old_max_load_over_bound == float("inf") and r.old_completion_s == float("inf")
    assert r.bound_s == pytest.approx(lower_bound(topo, flows))
    assert r.max_load_over_bound <= 1.05
    assert r.completion_s == pytest.approx(r.bound_s * r.max_load_over_bound, rel=0.03)
    dead = {topo.link("leaf0", "spine0").id, topo.link("spine0", "leaf0").id}
    assert not any(dead & set(p.links) for p in r.plan.pieces)


def test_a_degraded_link_is_planned_afresh_at_its_rate():
    topo, flows, plan, rows = fabric_and_rows()
    topo.set_state("leaf0", "spine0", "degraded", topo.link("leaf0", "spine0").capacity_gbps / 4)
    r = replan(topo, rows)
    assert r.how == "fresh"
    assert r.old_max_load_over_bound > 1.5 and r.max_load_over_bound <= 1.05


def test_a_degraded_cables_rate_from_c4ds_ratio():
    # it carried 100 GB/s worth (800 Gb/s) under the plan; its connections now run at 1/4 of their peers
    assert degraded_rate_gbps(3200.0, 0.25, 100e9, 1.0) == pytest.approx(200.0)
    # a cable the plan filled: the nominal rate times the ratio
    assert degraded_rate_gbps(800.0, 0.25, 100e9, 1.0) == pytest.approx(200.0)
    assert degraded_rate_gbps(800.0, 0.5, 0.0, 1.0) == pytest.approx(400.0)  # nothing known of its load
