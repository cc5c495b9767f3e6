"""Collective detectors end to end on the multi-job 3D twin (sim/jobs_twin.py): the production samplers
read what the twin writes per node (Inspector coll/p2p records per communicator, init lines, NVML), and
the detectors run on those rows with no job label (per-node agents see none): jobs come from the
communicators."""

from __future__ import annotations

import polars as pl
from testkit.twin import frames, sample_twin

from c4.analytics.collective import hang_findings, straggler_findings
from c4.analytics.diagnose import diagnose
from c4.analytics.rank_gpu import RankPlaces
from c4.sim.jobs_twin import JobsTwin
from c4.sim.twin import Fault

EPOCH_S = 1_800_000_000.0
#: Two jobs on four nodes: a on host0-1 (tp 8, pp 2), b on host2-3 (tp 4, pp 2, dp 2).
JOBS = [
    {"name": "a", "tp": 8, "pp": 2, "dp": 1, "microbatches": 4, "first_node": 0},
    {"name": "b", "tp": 4, "pp": 2, "dp": 2, "microbatches": 4, "first_node": 2},
]
TABLES = ("nccl_collectives", "gpu_samples")


def run(tmp_path, faults, ticks: int, jobs=JOBS, nodes: int = 4) -> tuple[JobsTwin, dict[str, pl.DataFrame]]:
    """Step the jobs twin, read every node with the production samplers each tick; frames by table."""
    twin = JobsTwin(nodes=nodes, leaves=2, spines=2, seed=1, jobs=jobs, faults=faults, horizon_s=ticks + 10)
    _, rows = sample_twin(tmp_path, twin, ticks, EPOCH_S)
    return twin, frames(rows, TABLES)


def identity(twin: JobsTwin) -> pl.DataFrame:
    """The rank_identity view the collector derives from the twin's init lines: every (communicator,
    rank) on its node and NVML GPU."""
    rows = []
    for job, spec in twin.job_specs.items():
        for r in range(spec.world):
            host, local = spec.host_of(r)
            for name, rank, size in twin.communicators(job, r):
                rows.append((twin.comm_id(job, name), rank, size, host, twin.gpu_of(host, local), "bus_id"))
    schema = ["comm_id", "rank", "n_ranks", "node", "gpu_index", "gpu_from"]
    return pl.DataFrame(rows, schema=schema, orient="row")


def test_a_hang_in_one_twin_job_is_localized_while_the_other_runs(tmp_path):
    """Rank 9 of job b (host3, GPU 1) hangs at 6 s; job a runs on: the hang is b's, on that GPU."""
    twin, f = run(tmp_path, [Fault("rank_hang", at_s=6, node="host3", gpu=1)], 16)
    colls, gpus = f["nccl_collectives"], f["gpu_samples"]
    assert set(colls["job"]) == {""}  # no agent labelled a job
    now = gpus["ts"].max()
    (found,) = hang_findings(colls, gpus, now)
    assert (found.detector, found.component) == ("hang_non_comm", "host3/gpu1")
    b_comms = {twin.comm_id("b", c) for c, _, _ in twin.communicators("b", 9)}
    assert found.job == "comms:" + min(
        c for c in set(colls["comm_id"]) if c in b_comms or _in_job(twin, "b", c)
    )
    assert found.communicator in set(colls.filter(pl.col("hostname").is_in(["host2", "host3"]))["comm_id"])
    assert [x.component for x in diagnose({"nccl_collectives": colls, "gpu_samples": gpus})] == ["host3/gpu1"]


def _in_job(twin: JobsTwin, job: str, comm: str) -> bool:
    """Whether ``comm`` is one of ``job``'s communicators."""
    spec = twin.job_specs[job]
    return any(
        comm == twin.comm_id(job, c) for r in range(spec.world) for c, _, _ in twin.communicators(job, r)
    )


def test_healthy_twin_jobs_raise_no_straggler_or_hang(tmp_path):
    _, f = run(tmp_path, [], 14)
    colls, gpus = f["nccl_collectives"], f["gpu_samples"]
    assert straggler_findings(colls) == []
    assert hang_findings(colls, gpus, gpus["ts"].max()) == []


def test_a_slow_twin_worker_is_blamed_not_its_victims(tmp_path):
    """One worker of a tp=2 pp=4 dp=4 job computes 2.3x slower from 4 s on (B's 1F1B schedule): only
    its GPU is blamed; no rank the twin's truth calls a victim is."""
    jobs = [{"name": "c", "tp": 2, "pp": 4, "dp": 4, "microbatches": 4, "first_node": 0}]
    twin, f = run(tmp_path, [Fault("slow_worker", at_s=4, node="host2", gpu=3, factor=2.3)], 24, jobs=jobs)
    colls = f["nccl_collectives"]
    truth = twin.pipeline_truth()["c"]
    (found,) = straggler_findings(colls, places=RankPlaces(identity(twin), f["gpu_samples"]))
    assert found.component == "host2/gpu3"
    (cause,) = truth.blamed
    assert twin.job_specs["c"].host_of(cause) == ("host2", 3)
    victims = {f"host{r // 8}/gpu{r % 8}" for r in truth.victims}  # 8 ranks per host, local rank = GPU
    assert found.affected and set(found.affected) <= victims
    assert abs(found.slowdown_frac - truth.true_slowdown_frac) < 0.25 * truth.true_slowdown_frac


def test_a_slow_twin_pipeline_link_is_the_cause_not_its_tensor_parallel_peers(tmp_path):
    """No step trace, NCCL Inspector's default records only: the pipeline link from rank 1 (host0/gpu1,
    stage 0) to rank 9 (host1/gpu1, stage 1) of a tp=4 pp=2 dp=2 job is 6x slow from 4 s on. The one
    finding is that link, named by both GPUs; its ends' TP peers are affected, none is blamed."""
    jobs = [{"name": "c", "tp": 4, "pp": 2, "dp": 2, "microbatches": 4, "first_node": 0}]
    fault = Fault("slow_comm", at_s=4, node="host0", gpu=1, factor=6.0)
    twin, f = run(tmp_path, [fault], 16, jobs=jobs, nodes=2)
    truth = twin.pipeline_truth()["c"]
    assert truth.blamed == {1, 9}
    found = diagnose({**f, "rank_identity": identity(twin)})
    assert [(x.detector, x.fault_class, x.component) for x in found] == [
        ("p2p_link", "slow_comm", "host0/gpu1->host1/gpu1")
    ]
    victims = {f"host{r // 8}/gpu{r % 8}" for r in truth.victims}  # 8 ranks per host, local rank = GPU
    tp_peers = {f"host{h}/gpu{g}" for h in (0, 1) for g in (0, 2, 3)}  # replica 0 on both stages
    assert tp_peers <= set(found[0].affected) <= victims
    # no DP straggler here (two replicas): the cost is the link's excess per iteration (0.210 vs true 0.197)
    assert found[0].evidence["slowdown_from"].startswith("link excess")
    assert abs(found[0].slowdown_frac - truth.true_slowdown_frac) < 0.15 * truth.true_slowdown_frac
