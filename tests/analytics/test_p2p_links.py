"""A slow pipeline link on NCCL Inspector's default records alone (no step trace): the link is the cause,
its ends' TP peers and the other stages of its replica only waited (hand-built frames, job_frames.py)."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from job_frames import RECV_US, T0, Job3D, identity_frame, job_frame

from c4.analytics.collective import straggler_findings
from c4.analytics.diagnose import diagnose
from c4.analytics.p2p_links import slow_link_findings
from c4.analytics.rank_gpu import RankPlaces


def _links(job: Job3D, colls: pl.DataFrame | None = None):
    return slow_link_findings(job_frame(job) if colls is None else colls, RankPlaces(identity_frame(job)))


def _replica(job: Job3D, d: int) -> set[str]:
    return {job.gpu(job.rank(s, d, t)) for s in range(job.pp) for t in range(job.tp)}


def test_a_slow_pipeline_link_is_named_by_both_gpus_and_blames_no_rank():
    """tp=8 pp=4 dp=4, the link from stage 1 to stage 2 of replica 2, TP rank 3: both its ends are late
    inside their TP groups and the whole replica at every DP collective, yet no rank is blamed: the one
    finding is the link, and the other 30 GPUs of its replica (the ends' TP peers, stages 0 and 3) are
    its affected."""
    job = Job3D(tp=8, pp=4, dp=4, slow_link=(1, 2, 3))
    colls, places = job_frame(job), RankPlaces(identity_frame(job))
    links = slow_link_findings(colls, places)
    found = straggler_findings(colls, places=places, links=links)
    assert found == []
    (link,) = links
    a, b = job.gpu(job.rank(1, 2, 3)), job.gpu(job.rank(2, 2, 3))
    assert (link.detector, link.fault_class, link.component_type) == ("p2p_link", "slow_comm", "link")
    assert (link.component, link.job, link.communicator) == (f"{a}->{b}", "jobA", job.pp_comm(2, 3))
    assert set(link.affected) == _replica(job, 2) - {a, b}
    assert link.evidence["directions"] == "backward,forward" and link.evidence["ranks"] == [1, 2]
    # 0.2 s of the 1 s iteration late at every DP collective: 0.2 / 0.8 = 25% longer steps
    assert link.slowdown_frac == pytest.approx(0.25, abs=0.01)


def test_diagnose_on_inspector_alone_raises_the_link_and_no_straggler():
    job = Job3D(tp=8, pp=4, dp=4, slow_link=(0, 1, 5))
    found = diagnose({"nccl_collectives": job_frame(job), "rank_identity": identity_frame(job)})
    assert [(f.detector, f.component) for f in found] == [
        ("p2p_link", f"{job.gpu(job.rank(0, 1, 5))}->{job.gpu(job.rank(1, 1, 5))}")
    ]
    assert found[0].evidence["hardware"] == []  # joined with its ends' NIC ports: none is faulty here


def test_without_the_link_detector_its_tp_peers_would_be_blamed():
    """What the link detector prevents (issue 18): given no slow links, the stragglers of the link's
    replica are judged as a slow worker's victims, and ranks that only waited are blamed."""
    job = Job3D(tp=8, pp=4, dp=4, slow_link=(1, 2, 3))
    colls, places = job_frame(job), RankPlaces(identity_frame(job))
    blamed = {f.component for f in straggler_findings(colls, places=places, links=[])}
    assert blamed  # the ends, late inside their TP groups
    assert all(g in _replica(job, 2) for g in blamed)


def test_link_onset_is_its_first_slow_transfer():
    job = Job3D(tp=2, pp=4, dp=2, steps=12, slow_link=(0, 1, 1), link_from=5)
    (link,) = _links(job)
    on_link = job_frame(job).filter(
        (pl.col("comm_id") == job.pp_comm(1, 1)) & (pl.col("exec_time_us") > 2 * RECV_US)
    )
    assert link.first_seen == on_link["ts"].min() == T0 + timedelta(seconds=5.4)
    assert link.evidence["transfers"] == 7 * job.microbatches  # steps 5..11, per end and direction


@pytest.mark.parametrize(
    "kw",
    [
        {"slow": (1, 2, 3)},  # a slow worker: its victims' receives wait, their senders' sends do not
        {"slow": (2, 0, 0)},
        {"slow_link": (1, 2, 3), "link_from": 11},  # slow for the last step only: a blip
        {"slow_link": (1, 2, 3), "link_until": 8},  # slow, then fine for four steps: recovered
        {},  # healthy
    ],
)
def test_no_slow_link_where_only_one_end_waits_or_it_does_not_last(kw):
    assert _links(Job3D(tp=4, pp=4, dp=2, **kw)) == []


def test_a_slow_worker_beside_a_slow_link_is_still_blamed():
    """Two faults in one replica: the worker late inside its own TP group (not an end of the link) is a
    cause of its own; the link is found too."""
    job = Job3D(tp=8, pp=4, dp=4, slow=(3, 2, 6), slow_link=(0, 2, 1))
    colls, places = job_frame(job), RankPlaces(identity_frame(job))
    links = slow_link_findings(colls, places)
    found = straggler_findings(colls, places=places, links=links)
    assert [f.component for f in found] == [job.gpu(job.rank(3, 2, 6))]
    assert [x.component for x in links] == [f"{job.gpu(job.rank(0, 2, 1))}->{job.gpu(job.rank(1, 2, 1))}"]


def test_only_one_slow_direction_is_still_the_link():
    """Forward transfers slow, backward fine (one NIC's transmit side): one finding, its direction named."""
    job = Job3D(tp=2, pp=2, dp=2, slow_link=(0, 1, 0))
    colls = job_frame(job)
    a, b = job.rank(0, 1, 0), job.rank(1, 1, 0)
    backward = (pl.col("comm_id") == job.pp_comm(1, 0)) & (
        ((pl.col("hostname") == job.host(b)) & (pl.col("pid") == 10_000 + b) & (pl.col("coll") == "Send"))
        | ((pl.col("hostname") == job.host(a)) & (pl.col("pid") == 10_000 + a) & (pl.col("coll") == "Recv"))
    )
    colls = colls.with_columns(
        pl.when(backward).then(RECV_US).otherwise(pl.col("exec_time_us")).alias("exec_time_us")
    )
    (link,) = _links(job, colls)
    assert link.evidence["directions"] == "forward"


def test_message_size_and_bandwidth_as_inspector_writes_them():
    """With Inspector's msg_size_bytes and algobw_gbs: links are compared with the same message size, and
    the finding states the link's bandwidth against the typical."""
    job = Job3D(tp=2, pp=4, dp=2, slow_link=(2, 0, 1))
    colls = job_frame(job).with_columns(
        pl.lit(64 << 20, dtype=pl.UInt64).alias("msg_size_bytes"),
        ((64 << 20) / pl.col("exec_time_us") / 1e3).alias("algobw_gbs"),
    )
    (link,) = _links(job, colls)
    assert link.evidence["msg_size_bytes"] == 64 << 20
    assert link.evidence["algobw_gbs"] < link.evidence["typical_algobw_gbs"] / 2


def test_p2p_records_without_peer_or_exec_time_raise_nothing():
    job = Job3D(tp=2, pp=2, dp=2, slow_link=(0, 1, 0))
    colls = job_frame(job)
    assert _links(job, colls.with_columns(pl.lit(None, dtype=pl.Int64).alias("peer"))) == []
    assert _links(job, colls.drop("exec_time_us")) == []
    assert slow_link_findings(pl.DataFrame()) == []
