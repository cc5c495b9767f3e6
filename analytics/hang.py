"""Hangs per job: a job's communicators all stopped for several of their own periods while the rest of the
cluster may run on; the rank that never issued the next collective is the GPU of the job that idles."""

from __future__ import annotations

import polars as pl

from c4.analytics.findings import Finding
from c4.analytics.jobs import with_job
from c4.analytics.periods import comm_periods
from c4.analytics.rank_gpu import RankPlaces

#: GPU utilization (percent) of a GPU spinning in an NCCL kernel, waiting for a peer.
SPINNING_PCT = 50
#: GPU utilization (percent) below which a GPU is idle: its rank never launched the collective.
IDLE_PCT = 5


def _job_gpus(job_colls: pl.DataFrame, gpus: pl.DataFrame, places: RankPlaces) -> pl.DataFrame:
    """The gpu_samples rows of the job's GPUs: those the rank_identity view places on its ranks, and
    every GPU of a host of the job where the view places none (a rank number alone does not say which).

    A host of the job is the node whose agent wrote its records (``node``) or the hostname Inspector
    wrote in them; rows labelled with the job (``job``) count too.
    """
    hosts = set(job_colls["hostname"].drop_nulls().to_list())
    if "node" in job_colls.columns:
        hosts |= set(job_colls["node"].drop_nulls().to_list())
    job = job_colls["job"][0]
    if job and "job" in gpus.columns:
        hosts |= set(gpus.filter(pl.col("job") == job)["node"].unique().to_list())
    known: set[tuple[str, int]] = set()
    for comm, rank, host in job_colls.select(["comm_id", "rank", "hostname"]).unique().rows():
        where = places.of(comm, rank, host or None)
        if where is not None and not where.gpu_from.startswith("rank %"):
            known.add((where.node, where.gpu))
            hosts.add(where.node)
    placed_nodes = {n for n, _ in known}
    mine = gpus.filter(pl.col("node").is_in(list(hosts)))
    if not known:
        return mine
    pairs = pl.DataFrame(list(known), schema={"node": pl.String, "gpu_index": pl.Int64}, orient="row")
    keep = mine.filter(~pl.col("node").is_in(list(placed_nodes)))
    placed = mine.filter(pl.col("node").is_in(list(placed_nodes))).join(
        pairs.cast({"gpu_index": mine.schema["gpu_index"]}), on=["node", "gpu_index"], how="semi"
    )
    return pl.concat([keep, placed])


def _stalled(periods: pl.DataFrame, now, stall_periods: float, span_s: float) -> tuple[bool, float, float]:
    """(every communicator with a period silent for ``stall_periods`` of its own periods, seconds
    since the job's newest record, the job's period: its longest such communicator period).

    A communicator so rare that ``stall_periods`` of its periods exceed the window (``span_s``), e.g. a
    barrier every few minutes, could never show a stall: it is left out rather than veto every hang.
    """
    timed = periods.drop_nulls("period_s").filter(pl.col("period_s") * stall_periods <= span_s)
    if timed.is_empty():
        return False, 0.0, 0.0
    silent = [
        (now - last).total_seconds() >= stall_periods * p
        for p, last in timed.select(["period_s", "last_ts"]).rows()
    ]
    stalled_s = (now - periods["last_ts"].max()).total_seconds()
    return all(silent), stalled_s, float(timed["period_s"].max())


def _hang_comm(job_colls: pl.DataFrame, node: str) -> tuple[str, int]:
    """The communicator the idle GPU's host was last seen completing a collective in, and that sequence number."""
    on_host = job_colls.filter(pl.col("hostname") == node)
    src = on_host if not on_host.is_empty() else job_colls
    last = src.sort("ts").tail(1)
    return str(last["comm_id"][0]), int(last["coll_sn"][0])


def hang_findings(
    colls: pl.DataFrame,
    gpus: pl.DataFrame,
    now,
    stall_periods: float = 5.0,
    places: RankPlaces | None = None,
    periods: pl.DataFrame | None = None,
) -> list[Finding]:
    """Per job: no communicator of it has completed a collective for ``stall_periods`` of its own
    periods, a hang of that job (other jobs may run on); localized by its GPUs' activity: the others
    spin in NCCL kernels waiting, the GPU that never issued the next collective idles. ``periods``:
    comm_periods(colls), when the caller has it already."""
    if colls.is_empty():
        return []
    places = places or RankPlaces()
    c = with_job(colls)
    periods = comm_periods(c) if periods is None else periods
    span_s = (now - c["ts"].min()).total_seconds()  # the window the records come from
    out = []
    for (job,), job_colls in c.group_by(["job"], maintain_order=True):
        mine = periods.filter(pl.col("job") == job)
        stalled, stalled_s, period = _stalled(mine, now, stall_periods, span_s)
        if not stalled or gpus.is_empty():
            continue
        last = job_colls["ts"].max()
        recent = _job_gpus(job_colls, gpus.filter(pl.col("ts") > last), places)
        if recent.is_empty():
            continue
        latest = recent.sort("ts").group_by(["node", "gpu_index"], maintain_order=True).last()
        spinning = latest.filter(pl.col("util_gpu_pct") >= SPINNING_PCT)
        idle = latest.filter(pl.col("util_gpu_pct") < IDLE_PCT)
        # everyone else spins in NCCL kernels waiting for the collective; the rank that never issued it idles
        if spinning.height < 2 or not 0 < idle.height <= max(1, latest.height // 8):
            continue
        for r in idle.iter_rows(named=True):
            comp = f"{r['node']}/gpu{r['gpu_index']}"
            comm, seq = _hang_comm(job_colls, r["node"])
            who = f"job {job}" if job else "job"
            out.append(
                Finding(
                    "hang_non_comm",
                    "non_comm_hang",
                    "gpu",
                    comp,
                    r["node"],
                    last,
                    now,
                    0.85,
                    "restart_job",
                    f"{who} hung after collective #{seq} of {comm}: {comp} never issued the next "
                    f"one while {spinning.height} of its GPUs wait in NCCL",
                    {"last_seq": seq, "stalled_s": stalled_s, "period_s": period, "comm": comm},
                    job=job,
                    communicator=comm,
                )
            )
    return out


def silent_hangs(open_faults: list[dict], colls: pl.DataFrame) -> set[str]:
    """Open ``non_comm_hang`` faults whose job has completed no collective since the hang began.

    The hang detector needs the job's last collectives in its window: once a hung job's last record
    slides out of the window it sees nothing, which is not the hang ending. Such a fault stays open
    until the job progresses again (a relaunch counts) or an operator resolves it.
    """
    hangs = [
        f for f in open_faults if f.get("fault_class") == "non_comm_hang" and f.get("first_seen") is not None
    ]
    if not hangs:
        return set()
    latest: dict[str, object] = {}
    if not colls.is_empty() and "ts" in colls.columns:
        c = with_job(colls)
        latest = dict(c.group_by("job").agg(pl.col("ts").max()).rows())
    out = set()
    for f in hangs:
        progress = latest.get(f.get("job") or "")
        if progress is None or progress <= f["first_seen"]:
            out.add(f["fault_id"])
    return out
