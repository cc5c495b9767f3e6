"""Real collectors for the dashboard tests: one filled by the digital twin with injected faults, one empty, one down."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa
import pytest
from goodput_rows import accounting
from testkit.procs import CollectorProc, free_port
from testkit.step_sim import SimCause, simulate
from testkit.twin import frames, run_twin

from c4.catalogue import load
from c4.push import push_table
from c4.query import query_arrow
from c4.sim.twin import Fault
from c4.traffic.export import link_table, piece_routes, plan_run_row, plan_run_table, plan_table
from c4.traffic.planner import Planner

#: What the twin injects and what C4D must report for it (component, class).
FAULTS = [
    Fault("nic_degraded", at_s=5, duration_s=100, node="host1", nic=2, factor=0.5),
    Fault("xid", at_s=5, node="host2", gpu=3, xid=48),
]
#: A 3D-parallel job's step trace (PP=4 x DP=2, on node0) in which rank 5's GPU computes 2.3x slower.
STEP_JOB = "train-3d"
STEP_CAUSE = SimCause("slow_worker", ranks=[5], factor=2.3)
EXPECTED = {("host1/mlx5_2p1", "hardware"), ("host2/gpu3", "hardware"), ("node0/gpu5", "slow_worker")}

DIAGNOSIS_TOML = (
    "[collector]\ndiagnose_interval_s = 1.0\ndiagnose_window_s = 3600\n"
    'isolation_command = "scontrol update NodeName={node} State=DRAIN Reason={reason}"\n'
)


def _wait_for_faults(address: str, timeout_s: float = 60.0) -> set:
    deadline = time.monotonic() + timeout_s
    got: set = set()
    while time.monotonic() < deadline:
        t, _ = query_arrow(address, "SELECT DISTINCT component, fault_class FROM faults WHERE state = 'open'")
        got = {(r["component"], r["fault_class"]) for r in t.to_pylist()}
        if EXPECTED <= got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"the collector's diagnosis did not report {EXPECTED}; got {got}")


def step_ops_table(trace: pl.DataFrame):
    """A step trace as the agent's step_trace sampler sends it (ts = op start, node = the rank's host)."""
    spec = load()["step_ops"]
    rows = [
        {
            **r,
            "ts": datetime.fromtimestamp(r["start_s"], UTC).replace(tzinfo=None),
            "node": r.get("host") or "node0",
        }
        for r in trace.to_dicts()
    ]
    return pa.Table.from_pylist(
        [{c: r.get(c, "" if c in ("host", "comm") else None) for c in spec.column_names} for r in rows],
        schema=spec.arrow_schema,
    )


#: The jobs of the pushed accounts: names no diagnosis pass accounts itself, so a pass never supersedes them.
GOODPUT_JOBS = ("acct-3d", "acct-dp")


def push_accounting(address: str) -> None:
    """Two jobs' accounts as a diagnosis pass writes job_accounting, blaming the faults C4D found (the NIC port's
    and the slow worker's), over the half hour before now (goodput_rows.py: which interval is what)."""
    t, _ = query_arrow(
        address,
        "SELECT component, arg_min(fault_id, fault_id) AS fault_id, any_value(fault_class) AS fault_class "
        "FROM faults_current WHERE component IN ('host1/mlx5_2p1', 'node0/gpu5') GROUP BY component",
    )
    found = {r["component"]: (r["fault_id"], r["fault_class"], r["component"]) for r in t.to_pylist()}
    t0 = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1805)
    rows = accounting(t0, GOODPUT_JOBS, found["host1/mlx5_2p1"], found["node0/gpu5"])
    spec = load()["job_accounting"]
    push_table(
        address, "job_accounting", pa.Table.from_pylist(rows, schema=spec.arrow_schema), agent_id="ui-acct"
    )


#: The twin's job's two plans: its first, and the replan after a spine link went down (the newest, shown first).
PLANS = ("plan-test", "plan-test-2")
DOWN_LINK = ("leaf0", "spine1")


def push_plans(address: str, twin) -> None:
    """A C4P plan of the twin's connections and the replan after DOWN_LINK failed, each with its link loads and its
    plan_runs row (initial, then link_down replacing the first)."""
    planner = Planner(twin.topo, max_qps=4)
    plan = planner.plan(twin.flows)
    job = twin.job_name(twin.hosts[0])
    first = plan_run_row(plan, PLANS[0], job, "initial", ecmp_seeds=2)
    push_table(address, "plans", plan_table(plan, PLANS[0], 1.0), agent_id="ui-test-plan")
    push_table(address, "plan_links", link_table(plan, PLANS[0], 2), agent_id="ui-test-plan")
    push_table(address, "plan_runs", plan_run_table(first), agent_id="ui-test-plan")
    before = piece_routes(plan)
    twin.topo.set_state(*DOWN_LINK, "down")
    planner.replan(plan)  # moves the pieces off the dead link, in place
    link = "->".join(DOWN_LINK)
    second = plan_run_row(
        plan,
        PLANS[1],
        job,
        "link_down",
        previous_plan_id=PLANS[0],
        previous_routes=before,
        fault_id=f"link_down:{link}",
        link=link,
        ecmp_seeds=2,
    )
    over = second["max_load_over_bound"]
    push_table(address, "plans", plan_table(plan, PLANS[1], over), agent_id="ui-test-plan")
    push_table(address, "plan_links", link_table(plan, PLANS[1], 2), agent_id="ui-test-plan")
    push_table(address, "plan_runs", plan_run_table(second), agent_id="ui-test-plan")
    twin.topo.set_state(*DOWN_LINK, "up")


@pytest.fixture(scope="session")
def filled_collector(tmp_path_factory):
    """A real collector holding 30 twin iterations of a 4-node cluster with a degraded NIC and an Xid 48,
    a 3D-parallel job's step trace with a slow worker, diagnosed by C4D in the collector, plus two C4P plans
    (push_plans) with their link loads and history and two jobs' goodput accounts blaming the faults found."""
    tmp = tmp_path_factory.mktemp("ui-filled")
    cfg = tmp / "c4.toml"
    cfg.write_text(DIAGNOSIS_TOML)
    # rows of the last couple of minutes: the collector diagnoses a window ending at its own clock
    twin, rows = run_twin(tmp / "twin", FAULTS, steps=30, nodes=4, epoch_s=time.time() - 120)
    col = CollectorProc(tmp, extra=["--config", str(cfg)]).start()
    try:
        # stored tables only, not a wide table's per-element view (nvlink_samples)
        stored = [t for t in rows if t in load().tables]
        for table, df in frames(rows, stored).items():
            if df.height:
                push_table(col.address, table, df.to_arrow(), agent_id="ui-test-twin")
        push_plans(col.address, twin)
        trace = simulate(
            pp=4, dp=2, mb=4, steps=12, causes=[STEP_CAUSE], job=STEP_JOB, t0_s=time.time() - 100, hosts=True
        )
        push_table(col.address, "step_ops", step_ops_table(trace), agent_id="ui-test-trace")
        _wait_for_faults(col.address)
        push_accounting(col.address)
        yield col
    finally:
        col.stop()


@pytest.fixture(scope="session")
def empty_collector(tmp_path_factory):
    """A real collector with an empty store."""
    col = CollectorProc(tmp_path_factory.mktemp("ui-empty"), extra=[]).start()
    try:
        yield col
    finally:
        col.stop()


@pytest.fixture
def down_address() -> str:
    """A loopback address where no collector listens."""
    return f"127.0.0.1:{free_port()}"
