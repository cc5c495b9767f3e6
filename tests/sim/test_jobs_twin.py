"""Jobs in real structure on the twin: what each node's producers write, causes with truth, one job hanging."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl
import pytest
from testkit.twin import frames, sample_twin

from c4.catalogue import load
from c4.collector.store import Store
from c4.sim.cli import build_twin
from c4.sim.jobs_twin import JobsTwin
from c4.sim.node_files import STEP_TRACE_DIR
from c4.sim.runner import SimRunner
from c4.sim.twin import ClusterTwin, Fault, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "scenarios"
EPOCH_S = 1_800_000_000.0
#: Two small jobs on four nodes: a takes host0-1 (tp 8, pp 2), b host2-3 (tp 4, pp 2, dp 2).
JOBS = [
    {"name": "a", "tp": 8, "pp": 2, "dp": 1, "microbatches": 4, "first_node": 0},
    {"name": "b", "tp": 4, "pp": 2, "dp": 2, "microbatches": 4, "first_node": 2},
]
REQUIRED = ("job", "rank", "dp_rank", "pp_stage", "tp_rank", "step", "op", "start_s", "duration_s")


def _twin(faults=(), **kw) -> JobsTwin:
    return JobsTwin(nodes=4, leaves=2, spines=2, seed=1, jobs=JOBS, faults=list(faults), horizon_s=30, **kw)


def _run(tmp_path: Path, twin: JobsTwin, ticks: int) -> tuple[SimRunner, dict[str, list]]:
    """Step the twin and read every node with the production samplers after each tick."""
    return sample_twin(tmp_path, twin, ticks, EPOCH_S)


def test_one_job_hangs_while_the_other_runs_on(tmp_path):
    twin = _twin([Fault("rank_hang", at_s=6, node="host3", gpu=1)])  # rank 9 of b: stage 1, dp 0, tp 1
    _, rows = _run(tmp_path, twin, 14)
    coll = rows["nccl_collectives"]
    last = {j: max(r["tick"] for r in coll if twin.job_name(r["node"]) == j) for j in ("a", "b")}
    assert last["a"] == 13  # a writes records to the end
    assert last["b"] <= 8  # b stops within a step or two of the hang
    tail = [r for r in rows["gpu_samples"] if r["tick"] == 13]
    util = {(r["node"], r["gpu_index"]): r["util_gpu_pct"] for r in tail}
    assert util[("host3", 1)] == 0  # the hung rank's GPU idles
    assert util[("host3", 0)] == 100 and util[("host2", 5)] == 100  # its peers spin in the collective
    assert util[("host0", 1)] < 100  # the other job computes as usual
    truth = twin.pipeline_truth()["b"]
    assert truth.blamed == {9} and 13 in truth.victims and truth.true_slowdown_frac == float("inf")
    assert twin.pipeline_truth()["a"].true_slowdown_frac == 0


def test_inspector_records_per_communicator_and_identity(tmp_path):
    twin = _twin()
    _, rows = _run(tmp_path, twin, 4)
    coll = pl.DataFrame(
        [
            {k: r[k] for k in ("node", "comm_id", "rank", "n_ranks", "kind", "coll")}
            for r in rows["nccl_collectives"]
        ]
    )
    b = coll.filter(pl.col("node").is_in(["host2", "host3"]))
    sizes = set(b.select("kind", "n_ranks").unique().iter_rows())
    # b: tensor-parallel all-reduces (4 ranks), data-parallel ones (2), pipeline Send/Recv (pp 2)
    assert sizes == {("coll", 4), ("coll", 2), ("p2p", 2)}
    assert set(b.filter(pl.col("kind") == "p2p")["coll"]) == {"Send", "Recv"}
    a_ids, b_ids = set(coll.filter(pl.col("node") == "host0")["comm_id"]), set(b["comm_id"])
    assert a_ids and not a_ids & b_ids  # jobs never share a communicator
    init = [r for r in rows["nccl_topology"] if r.get("kind") == "init"]
    # every rank of b joins world, tp, dp and pp communicators: 16 ranks x 4
    assert len([r for r in init if r["node"] in ("host2", "host3")]) == 16 * 4
    assert {r["comm_id"] for r in init} >= set(
        coll["comm_id"]
    )  # every communicator recorded has its init lines
    assert all(r.get("start_ts") is None for r in rows["nccl_collectives"])  # NCCL's default: no start times


def test_verbose_inspector_writes_start_times(tmp_path):
    _, rows = _run(tmp_path, _twin(inspector_verbose=True), 2)
    recs = rows["nccl_collectives"]
    assert {r["kind"] for r in recs} == {"coll", "p2p"} and all(r["start_ts"] is not None for r in recs)


def test_step_trace_files_are_the_simulated_trace(tmp_path):
    twin = _twin([Fault("slow_worker", at_s=3, node="host1", gpu=2, factor=2.0)])
    runner, _ = _run(tmp_path, twin, 6)
    lines = []
    for f in sorted((tmp_path / "nodes").glob(f"*/{STEP_TRACE_DIR}/*.jsonl")):
        lines += [json.loads(x) for x in f.read_text().splitlines()]
    got = pl.DataFrame(lines, infer_schema_length=None)
    assert set(REQUIRED) <= set(got.columns) and got.height > 0
    assert {f.parent.parent.name for f in (tmp_path / "nodes").glob(f"*/{STEP_TRACE_DIR}/a-rank*.jsonl")} == {
        "host0",
        "host1",
    }
    want = pl.concat(
        [
            tj.trace.filter(pl.col("end_s") < twin.t).with_columns(pl.col("start_s") + EPOCH_S)
            for tj in twin.twin_jobs.values()
        ],
        how="diagonal",
    )
    key = ["job", "rank", "step", "op", "start_s"]
    assert got.height == want.height
    assert got.sort(key)["duration_s"].to_list() == pytest.approx(want.sort(key)["duration_s"].to_list())


def test_a_job_without_a_step_trace_writes_only_what_nccl_writes(tmp_path):
    """step_trace=False (most jobs export none): no trace lines and no step_ops rows, Inspector records as usual."""
    twin = _twin([Fault("slow_comm", 2, node="host2", gpu=2, factor=10)], step_trace=False)
    _, rows = _run(tmp_path, twin, 4)
    assert not [f for f in (tmp_path / "nodes").glob(f"*/{STEP_TRACE_DIR}/*") if f.stat().st_size]
    assert not rows.get("step_ops")
    assert {r["kind"] for r in rows["nccl_collectives"]} == {"coll", "p2p"}


@pytest.mark.parametrize(
    "fault, cls, component, blamed",
    [
        (Fault("slow_worker", 5, node="host3", gpu=1, factor=2.0), "slow_worker", "host3/gpu1", {9}),
        (
            Fault("stage_imbalance", 0, job="b", stage=1, factor=1.5),
            "stage_imbalance",
            "b/stage1",
            set(range(8, 16)),
        ),
        (Fault("cpu_stall", 5, node="host2", gpu=2, factor=20, stall_s=0.2), "cpu_stall", "host2/cpu", {2}),
        (Fault("slow_comm", 5, node="host2", gpu=2, factor=10), "slow_comm", "host2/nic2", {2, 10}),
        (Fault("data_imbalance", 5, job="b", factor=1.6), "data_imbalance", "b", set(range(16))),
    ],
)
def test_each_cause_has_its_truth(fault, cls, component, blamed):
    twin = _twin([fault])
    (row,) = twin.ground_truth()
    truth = twin.pipeline_truth()["b"]
    assert (row["expected_class"], row["component"], row["job"]) == (cls, component, "b")
    assert truth.blamed == blamed and not truth.blamed & truth.victims
    assert row["affected"] == ",".join(f"b/rank{r}" for r in sorted(truth.victims))
    assert row["slowdown_frac"] == truth.true_slowdown_frac > 0.05
    assert row["onset_s"] >= fault.at_s  # the start of the first step it acts on
    assert twin.pipeline_truth()["a"].true_slowdown_frac == 0  # the other job is untouched


def test_job_causes_need_a_jobs_scenario_and_a_place():
    with pytest.raises(ValueError, match="needs a scenario with jobs"):
        ClusterTwin(nodes=4, leaves=2, spines=2, faults=[Fault("slow_worker", 5, node="host1", gpu=0)])
    with pytest.raises(ValueError, match="already runs job a"):
        JobsTwin(nodes=4, jobs=[JOBS[0], {**JOBS[1], "first_node": 1}])
    with pytest.raises(ValueError, match="need 2 nodes"):
        JobsTwin(nodes=4, jobs=[{**JOBS[0], "first_node": 3}])
    with pytest.raises(ValueError, match="unknown keys"):
        JobsTwin(nodes=4, jobs=[{**JOBS[0], "colour": "red"}])
    with pytest.raises(ValueError, match="last stage"):
        _twin([Fault("slow_comm", 5, node="host1", gpu=0)])
    with pytest.raises(ValueError, match="cannot be injected"):
        _twin([Fault("xid", 5, node="host1", gpu=0, xid=79)])


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("jobs_*.yaml")), ids=lambda p: p.stem)
def test_jobs_scenarios_build(path):
    spec = load_scenario(path)
    args = argparse.Namespace(scenario=str(path), nodes=None, seed=None, duration_s=25.0)
    twin, name = build_twin(args)
    assert isinstance(twin, JobsTwin) and name == spec["name"] and len(twin.job_specs) == 2
    rows = twin.ground_truth()
    assert len(rows) == 1 and rows[0]["job"] in twin.job_specs
    truth = twin.pipeline_truth()[rows[0]["job"]]
    assert truth.blamed and not truth.blamed & truth.victims and truth.true_slowdown_frac > 0.05
    if (
        rows[0]["expected_class"] != "data_imbalance"
    ):  # there every replica ends up carrying the load some step
        assert truth.victims


def test_rank_identity_places_every_rank_of_every_communicator(tmp_path):
    """Init lines per communicator + NVML through the collector's rank_identity view: each rank on its GPU."""
    twin = _twin()
    _, rows = _run(tmp_path / "twin", twin, 2)
    store = Store(tmp_path / "c4.duckdb", load())
    try:
        for table, df in frames(
            rows, ["nccl_topology", "gpu_samples", "gpu_processes", "nccl_collectives"]
        ).items():
            store.con.register("_rows", df.to_arrow())
            store.con.execute(f'INSERT INTO "{table}" SELECT * FROM _rows')
            store.con.unregister("_rows")
        got = store.con.execute(
            "SELECT comm_id, rank, node, pid, gpu_index, gpu_from FROM rank_identity"
        ).fetchall()
    finally:
        store.close()
    want = {}
    for job, spec in twin.job_specs.items():
        for r in range(spec.world):
            host, local = spec.host_of(r)
            for comm, rank, _size in twin.communicators(job, r):
                want[(twin.comm_id(job, comm), rank)] = (host, twin.pid_of(host, local), local, "bus_id")
    assert len(want) == 16 * 3 + 16 * 4  # a: world, tp, pp; b: world, tp, dp, pp
    assert {(c, r): tuple(rest) for c, r, *rest in got} == want
