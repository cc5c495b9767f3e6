"""plan_runs rows: a plan's reason, predecessor, moved pieces, loads over the bound and completion, as the catalogue types them."""

from __future__ import annotations

import pytest

from c4.catalogue import load
from c4.traffic.collectives import Job, job_flows
from c4.traffic.export import (
    link_rows,
    moved_pieces,
    piece_routes,
    plan_rows,
    plan_run_row,
    plan_run_table,
    stored_routes,
)
from c4.traffic.fluid import FluidSim
from c4.traffic.generators import leaf_spine
from c4.traffic.planner import Planner
from c4.traffic.routing import capacities, ecmp_subflows, loads_from_subflows, lower_bound, max_utilization


def ring(seed: int = 3):
    """A 16-host shuffled ring on 4 leaves x 4 spines, planned with up to 4 QPs per connection."""
    topo = leaf_spine(16, 4, 4, nics_per_host=2)
    flows = job_flows(Job("j", [f"host{i}" for i in range(16)], shuffle_seed=seed, channels=2), topo)
    planner = Planner(topo, max_qps=4)
    return topo, flows, planner, planner.plan(flows)


def test_a_first_plan_row_carries_its_load_ecmp_and_completion():
    topo, flows, _, plan = ring()
    row = plan_run_row(plan, "p1", "j", "initial", ecmp_seeds=3, first_seed=7)
    bound = lower_bound(topo, flows)
    cap = capacities(topo)
    ecmp = [
        max_utilization(loads_from_subflows(len(cap), ecmp_subflows(topo, flows, s)), cap) for s in (7, 8, 9)
    ]
    assert row["bound_s"] == pytest.approx(bound)
    assert row["max_load_over_bound"] == pytest.approx(plan.max_utilization() / bound)
    assert row["ecmp_over_bound"] == pytest.approx(sum(ecmp) / 3 / bound)
    assert row["ecmp_over_bound"] > row["max_load_over_bound"]  # a shuffled ring collides under ECMP
    assert row["completion_s"] == pytest.approx(FluidSim(cap, plan.subflows()).completion_time())
    assert (row["connections"], row["pieces"], row["moved_pieces"]) == (len(flows), len(plan.pieces), 0)
    assert (row["reason"], row["previous_plan_id"], row["fault_id"], row["link"], row["applied"]) == (
        "initial",
        "",
        "",
        "",
        "",
    )
    t = plan_run_table(row)
    assert t.schema.equals(load()["plan_runs"].arrow_schema) and t.num_rows == 1


def test_a_replan_counts_the_pieces_it_moved_as_the_planner_does():
    topo, _, planner, plan = ring()
    before = piece_routes(plan)  # Planner.replan moves pieces in place
    hot = next(topo.links[lid] for lid in plan.pieces[0].links if topo.links[lid].src.startswith("leaf"))
    topo.set_state(hot.src, hot.dst, "down")
    planner.replan(plan)
    row = plan_run_row(
        plan,
        "p2",
        "j",
        "link_down",
        previous_plan_id="p1",
        previous_routes=before,
        fault_id="f-1",
        link=hot.name,
        applied="twin",
    )
    assert row["moved_pieces"] == plan.churn > 0
    assert row["moved_pieces"] < row["pieces"]  # only the pieces that crossed the dead link
    assert (row["previous_plan_id"], row["fault_id"], row["link"]) == ("p1", "f-1", hot.name)
    assert moved_pieces(plan, piece_routes(plan)) == 0


def test_stored_rows_give_the_same_routes_as_the_plan():
    _, _, _, plan = ring()
    assert stored_routes(plan_rows(plan, "p1", 1.0)) == piece_routes(plan)


def test_an_unknown_reason_is_refused():
    _, _, _, plan = ring()
    with pytest.raises(ValueError, match="link_down"):
        plan_run_row(plan, "p1", "j", "because")


def test_link_rows_take_ecmp_from_the_given_hash_seed():
    topo, flows, _, plan = ring()
    loads = loads_from_subflows(len(topo.links), ecmp_subflows(topo, flows, 42))
    rows = link_rows(plan, "p1", ecmp_seeds=1, first_seed=42)
    assert [r["ecmp_bytes"] for r in rows] == pytest.approx(loads.tolist())
