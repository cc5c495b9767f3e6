"""The twin routes a job by a given C4P plan: pieces on their paths, a piece on a dead link re-hashed
over the live spines (only those move), and a plan that does not fit the job refused."""

from __future__ import annotations

import numpy as np
import pytest

from c4.sim.planned_routes import PlanMismatch
from c4.sim.twin import ClusterTwin, Fault
from c4.traffic.export import plan_rows
from c4.traffic.fluid import FluidSim
from c4.traffic.planner import Planner
from c4.traffic.routing import lower_bound


def twin_with_plan(faults=()):
    """16 nodes on 4 leaves x 4 spines: the shuffled ring's cross-leaf bytes fill the leaves' uplinks."""
    twin = ClusterTwin(nodes=16, leaves=4, spines=4, seed=1, faults=list(faults))
    plan = Planner(twin.topo, max_qps=4).plan(twin.flows)
    return twin, plan


def paths(twin):
    return {k: tuple(v) for k, v in twin.connection_paths().items()}


def test_a_plan_object_and_its_stored_rows_route_the_same():
    twin, plan = twin_with_plan()
    twin.use_plan(plan)
    from_plan = paths(twin), twin.collective_s()
    twin.use_plan(plan_rows(plan, "p1", 1.0))
    assert (paths(twin), twin.collective_s()) == from_plan
    assert twin.routing == "applied"
    # on a healthy fabric the plan is at the bound, and the twin finishes the all-reduce there
    assert twin.collective_s() == pytest.approx(lower_bound(twin.topo, twin.flows), rel=0.03)


def test_a_dead_spine_link_moves_only_the_pieces_on_it():
    twin, plan = twin_with_plan([Fault("spine_link_down", at_s=0.0)])
    twin.use_plan(plan)
    before = paths(twin)
    twin.step()  # the fault takes leaf0 <-> spine0 down
    assert twin.topo.link("leaf0", "spine0").state == "down"
    after = paths(twin)
    hit = {k for k, v in before.items() if "leaf0->spine0" in v or "spine0->leaf0" in v}
    assert hit
    assert {k for k in before if before[k] != after[k]} == hit  # resilient hashing: the rest stay
    assert not any("leaf0->spine0" in v or "spine0->leaf0" in v for v in after.values())
    # re-hashed pieces collide: slower than the bound of the fabric that is left, yet they finish
    assert lower_bound(twin.topo, twin.flows) * 1.05 < twin.collective_s() < float("inf")


def test_a_plan_that_does_not_route_the_job_is_refused():
    twin, plan = twin_with_plan()
    rows = plan_rows(plan, "p1", 1.0)
    first = (rows[0]["src"], rows[0]["dst"], rows[0]["channel"])
    with pytest.raises(PlanMismatch, match="unrouted"):
        twin.use_plan([r for r in rows if (r["src"], r["dst"], r["channel"]) != first])
    with pytest.raises(PlanMismatch, match="does not run"):
        twin.use_plan([*rows, {**rows[0], "src": "elsewhere"}])
    assert twin.routing == "ecmp"  # a refused plan changes nothing


def test_finish_times_free_capacity_as_pieces_end():
    """Two pieces on one 1 B/s link, 1 and 3 bytes: equal rates until the small one ends at 2 s,
    then the large one has the link alone for its last 2 bytes and ends at 4 s (one-shot rates: 6 s)."""
    sim = FluidSim(np.array([1.0]), [([0], 1.0), ([0], 3.0)])
    assert sim.finish_times_s(batch_tolerance=0.0).tolist() == pytest.approx([2.0, 4.0])
    assert sim.completion_time(batch_tolerance=0.0) == pytest.approx(4.0)
    stuck = FluidSim(np.array([1.0, 0.0]), [([0], 1.0), ([1], 1.0)])
    assert stuck.finish_times_s().tolist() == [1.0, float("inf")]
