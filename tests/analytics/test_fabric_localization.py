"""The fabric model from C4P's plan: connection paths as the twin routes them, and picked up by the runner."""

from __future__ import annotations

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
    runner.run_once(cur)  # an empty window with a plan: no error, nothing found
    cur.close()
    store.close()


def test_bad_fabric_topology_is_named(tmp_path):
    with pytest.raises(ValueError, match="fabric_topology .*nope.yaml"):
        capacities_from_topology(str(tmp_path / "nope.yaml"))
    caps = capacities_from_topology("deploy/examples/topology-leaf-spine.yaml")
    assert caps and all("->" in k and v > 0 for k, v in caps.items())
