"""Detectors in real job structure: communicator roles, periods per communicator, pipeline victims kept out
of straggler blame, and a hang of one job found while another job runs on (hand-built Inspector frames)."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
from job_frames import T0, Job3D, identity_frame, job_frame

from c4.analytics.collective import (
    hang_findings,
    iteration_period_s,
    slow_connection_findings,
    straggler_findings,
)
from c4.analytics.communicators import communicator_roles
from c4.analytics.diagnose import diagnose
from c4.analytics.periods import comm_periods
from c4.analytics.rank_gpu import RankPlaces


def roles_of(job: Job3D, **kw) -> dict[str, str]:
    roles = communicator_roles(job_frame(job, **kw), RankPlaces(identity_frame(job)))
    return dict(roles.select(["comm_id", "role"]).rows())


def test_roles_of_a_3d_job_on_8_nodes_of_8_gpus():
    """tp=8 pp=4 dp=2: 8 TP groups (one node each), 32 DP pairs across nodes, 16 pipelines of 4 stages."""
    job = Job3D(tp=8, pp=4, dp=2, steps=3)
    roles = communicator_roles(job_frame(job), RankPlaces(identity_frame(job)))
    by_role = dict(roles.group_by("role").len().rows())
    assert by_role == {"TP": 8, "DP": 32, "PP": 16}
    tp = roles.filter(pl.col("comm_id") == job.tp_comm(1, 1)).row(0, named=True)
    assert (tp["job"], tp["n_ranks"], tp["nodes"], tp["hosts"]) == ("jobA", 8, 1, ["jobA-node3"])
    assert tp["gpus"] == [f"jobA-node3/gpu{i}" for i in range(8)]
    dp = roles.filter(pl.col("comm_id") == job.dp_comm(2, 5)).row(0, named=True)
    assert (dp["n_ranks"], dp["nodes"], dp["ops"]) == (2, 2, ["ReduceScatter"])
    pp = roles.filter(pl.col("comm_id") == job.pp_comm(0, 3)).row(0, named=True)
    assert (pp["n_ranks"], pp["nodes"], pp["ops"]) == (4, 4, ["Recv", "Send"])


def test_expert_world_and_one_node_roles():
    """All-to-all is expert parallel, a group of every GPU of the job is its world; on one node,
    neighbouring GPUs are a tensor-parallel group and strided ones data parallel."""
    job = Job3D(tp=4, pp=1, dp=2, steps=3)  # one node: TP {0-3}, {4-7}; DP {0,4}, {1,5}, ...
    colls = job_frame(job)
    ident = identity_frame(job)
    extra = []
    for comm, coll, members in (("jobA-ep", "All2All", [0, 1]), ("jobA-world", "AllReduce", list(range(8)))):
        for i, g in enumerate(members):
            extra.append(
                colls.row(0, named=True)
                | {"comm_id": comm, "coll": coll, "rank": i, "n_ranks": len(members), "hostname": job.host(g)}
            )
    ident = pl.concat(
        [ident]
        + [
            pl.DataFrame(
                [
                    {
                        "job": "jobA",
                        "comm_id": c,
                        "rank": i,
                        "n_ranks": n,
                        "node": job.host(g),
                        "gpu_index": g,
                        "gpu_from": "bus_id",
                    }
                    for i, g in enumerate(m)
                ],
                schema=ident.schema,
            )
            for c, n, m in (("jobA-ep", 2, [0, 1]), ("jobA-world", 8, list(range(8))))
        ]
    )
    colls = pl.concat([colls, pl.DataFrame(extra, schema=colls.schema)])
    roles = dict(communicator_roles(colls, RankPlaces(ident)).select(["comm_id", "role"]).rows())
    assert roles["jobA-ep"] == "EP"
    assert roles["jobA-world"] == "WORLD"
    assert roles[job.tp_comm(0, 1)] == "TP"
    assert roles[job.dp_comm(0, 2)] == "DP"


def test_one_node_groups_of_a_job_without_tensor_parallelism_are_dp():
    """tp=1 pp=4 dp=4 on 8-GPU nodes: each stage's four data-parallel ranks sit on one node."""
    roles = roles_of(Job3D(tp=1, pp=4, dp=4, steps=3))
    assert sorted(roles.values()) == ["DP"] * 4 + ["PP"] * 4


def test_a_lone_data_parallel_job_is_dp():
    job = Job3D(tp=1, pp=1, dp=16, steps=3)  # 16 ranks on two nodes, one group
    assert set(roles_of(job).values()) == {"DP"}


def test_period_per_communicator_and_the_job_iteration():
    """TP runs twice per step, DP once: each has its own period; the job's iteration is the DP one."""
    job = Job3D(tp=8, pp=2, dp=2, steps=10, period_s=1.5)
    colls = job_frame(job)
    p = dict(comm_periods(colls).select(["comm_id", "period_s"]).rows())
    assert abs(p[job.dp_comm(0, 0)] - 1.5) < 1e-9
    assert p[job.tp_comm(0, 0)] < 1.0
    assert abs(iteration_period_s(colls) - 1.5) < 1e-9


def test_every_finding_carries_job_and_communicator():
    job = Job3D(tp=8, pp=1, dp=4, slow=(0, 2, 5))
    (f,) = straggler_findings(job_frame(job), places=RankPlaces(identity_frame(job)))
    assert (f.component, f.job, f.communicator) == (job.gpu(job.rank(0, 2, 5)), "jobA", job.tp_comm(0, 2))


def _stragglers(job: Job3D, **kw):
    return straggler_findings(job_frame(job, **kw), places=RankPlaces(identity_frame(job)))


def test_a_slow_worker_is_blamed_not_its_pipeline_with_tensor_parallel_records():
    """tp=8 pp=4 dp=4: the slow worker's replica is last in every stage's DP collectives (32 groups);
    only the worker, last inside its TP group, is blamed; the 31 others of its replica are affected."""
    job = Job3D(tp=8, pp=4, dp=4, slow=(1, 2, 3))
    (f,) = _stragglers(job)
    w = job.rank(1, 2, 3)
    assert (f.component, f.job) == (job.gpu(w), "jobA")
    replica = {job.gpu(job.rank(s, 2, t)) for s in range(4) for t in range(8)} - {job.gpu(w)}
    assert set(f.affected) == replica
    assert job.tp_comm(1, 2) in f.evidence["comms"].split(",")
    # its replica arrives 0.2 s late at every DP collective of a 1 s iteration: 0.2 / 0.8 = 25% longer steps
    assert abs(f.slowdown_frac - 0.25) < 0.01


def test_a_slow_worker_is_told_from_its_victims_by_receive_waits():
    """tp=1 pp=4 dp=4 (no TP group): the slow stage-1 worker's receives are short, its replica's
    other stages wait on theirs; the worker is blamed, stages 0, 2, 3 are affected."""
    job = Job3D(tp=1, pp=4, dp=4, slow=(1, 2, 0))
    (f,) = _stragglers(job)
    assert f.component == job.gpu(job.rank(1, 2, 0))
    assert set(f.affected) == {job.gpu(job.rank(s, 2, 0)) for s in (0, 2, 3)}
    assert f.evidence["recv_wait_us"] < 1000


def test_of_two_tensor_parallel_peers_the_one_its_group_waits_for_is_blamed():
    """tp=2: a two-rank TP group shows no straggler by spread, and both peers arrive late at their DP
    collectives with short receives; the one with the shorter TP execution times arrived last."""
    job = Job3D(tp=2, pp=4, dp=4, slow=(1, 2, 1))
    (f,) = _stragglers(job)
    assert f.component == job.gpu(job.rank(1, 2, 1))
    replica = {job.gpu(job.rank(s, 2, t)) for s in range(4) for t in range(2)}
    assert set(f.affected) == replica - {f.component}


def test_when_only_victims_are_late_the_rank_their_receives_wait_on_is_blamed():
    """The slow worker's own DP collectives are not seen: the late ranks of stages 0, 2 and 3 all wait
    on their receives, and those name the stage-1 worker as the sender they wait for."""
    job = Job3D(tp=1, pp=4, dp=4, slow=(1, 2, 0))
    colls = job_frame(job).filter(pl.col("comm_id") != job.dp_comm(1, 0))
    (f,) = straggler_findings(colls, places=RankPlaces(identity_frame(job)))
    assert (f.component, f.job, f.communicator) == (job.gpu(job.rank(1, 2, 0)), "jobA", job.pp_comm(2, 0))
    assert set(f.affected) == {job.gpu(job.rank(s, 2, 0)) for s in (0, 2, 3)}
    assert f.evidence["signal"] == "p2p_recv" and f.evidence["waited_on_by_receives"] > 0


def test_a_lone_late_rank_that_only_waited_is_not_blamed():
    """Only stage 3's DP collectives are seen: its late rank waits on receives, so it is not blamed;
    the rank it waits on (through stage 2, on the slow stage-1 worker) is."""
    job = Job3D(tp=1, pp=4, dp=4, slow=(1, 2, 0))
    colls = job_frame(job).filter(
        pl.col("comm_id").str.contains("-pp-") | (pl.col("comm_id") == job.dp_comm(3, 0))
    )
    found = straggler_findings(colls, places=RankPlaces(identity_frame(job)))
    assert job.gpu(job.rank(3, 2, 0)) not in {f.component for f in found}
    assert [f.component for f in found] == [job.gpu(job.rank(1, 2, 0))]


def test_without_receive_times_every_late_rank_is_still_reported():
    """No p2p records and no TP group: nothing tells cause from victim, so the earlier behaviour stands."""
    job = Job3D(tp=1, pp=4, dp=4, slow=(1, 2, 0))
    colls = job_frame(job).filter(pl.col("kind") == "coll")
    found = straggler_findings(colls, places=RankPlaces(identity_frame(job)))
    assert {f.component for f in found} == {job.gpu(job.rank(s, 2, 0)) for s in range(4)}


def test_healthy_3d_job_raises_no_straggler():
    assert _stragglers(Job3D(tp=8, pp=4, dp=4)) == []


def _utilization(
    job: Job3D, until_s: float, idle: set[str] = frozenset(), busy_pct: float = 100.0
) -> list[dict]:
    """gpu_samples rows of every GPU of ``job`` each second until ``until_s``; ``idle`` GPUs at 0%."""
    n = job.tp * job.pp * job.dp
    return [
        {
            "ts": T0 + timedelta(seconds=sec),
            "node": job.host(g),
            "gpu_index": g % 8,
            "util_gpu_pct": 0.0 if job.gpu(g) in idle else busy_pct,
        }
        for sec in range(int(until_s) + 1)
        for g in range(n)
    ]


def test_a_hang_in_one_job_is_found_while_the_other_runs():
    """Job A stops after 10 of 30 steps, rank 13's GPU idle while its peers spin in NCCL; job B keeps
    going. Only job A hangs, blamed on that GPU; job B's idle spare GPU is not blamed."""
    a = Job3D(name="jobA", tp=8, pp=1, dp=2, steps=30)
    b = Job3D(name="jobB", tp=8, pp=1, dp=2, steps=36, period_s=0.7, first_node=10)
    colls = pl.concat([job_frame(a, steps=range(10)), job_frame(b)]).sort("ts")
    hung = a.gpu(13)
    gpus = pl.DataFrame(
        _utilization(a, 25, idle={hung}) + _utilization(b, 25, idle={b.gpu(3)}, busy_pct=80.0)
    )
    now = T0 + timedelta(seconds=25)
    places = RankPlaces(pl.concat([identity_frame(a), identity_frame(b)]))
    (f,) = hang_findings(colls, gpus, now, places=places)
    assert (f.detector, f.component, f.job) == ("hang_non_comm", hung, "jobA")
    assert f.communicator.startswith("jobA-")
    assert f.evidence["stalled_s"] > 5 * f.evidence["period_s"]
    # the whole pass, through diagnose(): the same single finding
    tables = {
        "nccl_collectives": colls,
        "gpu_samples": gpus,
        "rank_identity": pl.concat([identity_frame(a), identity_frame(b)]),
    }
    assert [(x.component, x.job) for x in diagnose(tables, now=now)] == [(hung, "jobA")]


def test_a_rare_communicator_does_not_veto_a_hang():
    """Job A also runs a barrier every 6 s on its world communicator: 5 of those periods exceed the
    25 s window, so that communicator cannot show a stall and does not hold the hang back."""
    a = Job3D(name="jobA", tp=8, pp=1, dp=2, steps=30)
    colls = job_frame(a, steps=range(10))
    barrier = [
        colls.row(0, named=True)
        | {
            "ts": T0 + timedelta(seconds=6 * k + 0.5),
            "comm_id": "jobA-world",
            "rank": r,
            "n_ranks": 16,
            "coll": "AllReduce",
            "coll_sn": k,
            "hostname": a.host(r),
            "pid": 10_000 + r,
        }
        for k in range(4)
        for r in range(16)
    ]
    colls = pl.concat([colls, pl.DataFrame(barrier, schema=colls.schema)]).sort("ts")
    gpus = pl.DataFrame(_utilization(a, 25, idle={a.gpu(13)}))
    (f,) = hang_findings(colls, gpus, T0 + timedelta(seconds=25))
    assert (f.component, f.job) == (a.gpu(13), "jobA")


def test_a_finished_job_is_not_a_hang():
    """Every GPU of job A idles after its last collective (it ended), while job B runs: nothing."""
    a = Job3D(name="jobA", tp=8, pp=1, dp=2, steps=10)
    b = Job3D(name="jobB", tp=8, pp=1, dp=2, steps=30, first_node=10)
    colls = pl.concat([job_frame(a), job_frame(b)]).sort("ts")
    every_a_gpu = {a.gpu(g) for g in range(16)}
    gpus = pl.DataFrame(_utilization(a, 25, idle=every_a_gpu) + _utilization(b, 25))
    assert hang_findings(colls, gpus, T0 + timedelta(seconds=25)) == []


def _conns(job: str, comm: str, hosts: list[str], slow_host: str | None, windows: int = 5) -> list[dict]:
    """nccl_connections send rows: each host sends to the next on 2 channels; what ``slow_host``'s port
    sends or receives moves at 30%."""
    rows = []
    for w in range(windows):
        for i, host in enumerate(hosts):
            for ch in range(2):
                rate = (
                    0.3 if slow_host in (host, hosts[(i + 1) % len(hosts)]) else 1.0
                )  # its sends and receives
                rows.append(
                    {
                        "ts": T0 + timedelta(seconds=w),
                        "job": job,
                        "node": host,
                        "nic_device": "mlx5_0",
                        "comm_hash": comm,
                        "peer_rank": (i + 1) % len(hosts),
                        "channel": ch,
                        "direction": "send",
                        "bytes": 1 << 30,
                        "transfer_us": 25_000.0 / rate,
                        "ops": 1,
                    }
                )
    return rows


def test_slow_connection_findings_name_their_job_and_communicator():
    """Two jobs' communicators in one window: the slow port is judged against its own communicator's peers."""
    rows = _conns("jobA", "0xa1", [f"a{i}" for i in range(4)], "a2") + _conns(
        "jobB", "0xb1", [f"b{i}" for i in range(4)], None
    )
    hosts = pl.DataFrame(
        [
            {"comm_id": c, "rank": i, "hostname": f"{p}{i}"}
            for c, p in (("0xa1", "a"), ("0xb1", "b"))
            for i in range(4)
        ]
    )
    found = slow_connection_findings(pl.DataFrame(rows), hosts)
    assert [(f.component, f.job, f.communicator) for f in found] == [("a2/mlx5_0p1", "jobA", "0xa1")]
