"""The fabric model from C4P's plan: connection paths as the twin routes them, and picked up by the runner."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from c4.analytics.fabric import capacities_from_topology, from_plans
from c4.sim.twin import ClusterTwin


def test_plan_rows_give_the_paths_the_fabric_uses():
    import polars as pl

    from c4.traffic.export import plan_table
    from c4.traffic.planner import Planner

    twin = ClusterTwin(nodes=8, leaves=4, spines=4, seed=2, routing="plan")
    plan = Planner(twin.topo, max_qps=4).plan(twin.flows)
    model = from_plans(pl.from_arrow(plan_table(plan, "p1", 1.0)), twin.switch_capacity_gbps())
    want = twin.connection_paths()
    assert {k: sorted(v) for k, v in model.paths.items()} == {k: sorted(v) for k, v in want.items()}
    assert model.cables(*next(iter(want))) and all("<->" in c for c in model.cables(*next(iter(want))))
    assert from_plans(pl.DataFrame()) is None


def test_runner_uses_the_newest_plan_in_the_store(tmp_path):

    from c4.analytics.runner import DiagnosisRunner
    from c4.catalogue import load
    from c4.collector.store import PendingBatch, Store
    from c4.traffic.export import plan_table
    from c4.traffic.planner import Planner

    twin = ClusterTwin(nodes=8, leaves=4, spines=4, seed=2)
    store = Store(tmp_path / "c4.duckdb", load())
    cur = store.cursor()
    runner = DiagnosisRunner(load())
    assert runner.plan_fabric(cur) is None
    plan = Planner(twin.topo, max_qps=4).plan(twin.flows)
    table = plan_table(plan, "p1", 1.0)
    store.commit([PendingBatch("", 0, load()["plans"], table)])
    first = runner.plan_fabric(cur)
    assert first is not None and len(first.paths) == len(twin.flows)
    assert runner.plan_fabric(cur) is first  # cached until a new plan lands
    # a replan the collector stored as a dry run (or could not write) is not the routing in force
    for plan_id, applied in (("p2", "dry_run"), ("p3", "failed:disk full")):
        store.commit([PendingBatch("", 0, load()["plans"], plan_table(plan, plan_id, 1.0))])
        store.commit([PendingBatch.internal(load()["plan_runs"], [run_row(plan_id, applied)])])
        assert runner.plan_fabric(cur) is first
    store.commit([PendingBatch("", 0, load()["plans"], plan_table(plan, "p4", 1.0))])
    store.commit([PendingBatch.internal(load()["plan_runs"], [run_row("p4", "sport-table:/x")])])
    assert runner.plan_fabric(cur) is not first
    runner.run_once(cur)  # an empty window with a plan: no error, nothing found
    cur.close()
    store.close()


def test_bad_fabric_topology_is_named(tmp_path):
    with pytest.raises(ValueError, match="fabric_topology .*nope.yaml"):
        capacities_from_topology(str(tmp_path / "nope.yaml"))
    caps = capacities_from_topology("deploy/examples/topology-leaf-spine.yaml")
    assert caps and all("->" in k and v > 0 for k, v in caps.items())


def run_row(plan_id: str, applied: str) -> dict:
    """A plan_runs row of a collector's replan."""
    return {
        "ts": datetime.now(UTC).replace(tzinfo=None),
        "node": "",
        "job": "dp0",
        "plan_id": plan_id,
        "reason": "link_down",
        "fault_id": "nic_down:host0/mlx5_0p1",
        "link": "host0/nic0p0->leaf0",
        "previous_plan_id": "p1",
        "connections": 1,
        "pieces": 1,
        "moved_pieces": 1,
        "max_load_over_bound": 1.0,
        "ecmp_over_bound": 2.0,
        "bound_s": 1.0,
        "completion_s": 1.0,
        "applied": applied,
    }
