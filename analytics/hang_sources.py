"""Hang localization from NCCL's own reports: RAS missing/dead ranks and lagging collective counts, and
PyTorch Flight Recorder verdicts; each names the rank the job waits for, and its GPU from the rank_identity view."""

from __future__ import annotations

import polars as pl

from c4.analytics.findings import Finding
from c4.analytics.rank_gpu import RankPlaces


def _ranks(text: str | None) -> list[int]:
    """'3,17' -> [3, 17] (RAS lists ranks comma separated; blanks and junk are skipped)."""
    return [int(x) for x in (text or "").replace(" ", "").split(",") if x.lstrip("-").isdigit()]


def _rank_hosts(
    ras: pl.DataFrame, colls: pl.DataFrame | None
) -> dict[tuple[str, int], tuple[str, tuple[int, str] | None]]:
    """(communicator, rank) -> (host, RAS's GPU of it as a hint) from RAS rank rows, else the collectives' hostnames."""
    hosts: dict[tuple[str, int], tuple[str, tuple[int, str] | None]] = {}
    if colls is not None and not colls.is_empty():
        for comm, rank, host in (
            colls.select(["comm_id", "rank", "hostname"]).unique(["comm_id", "rank"]).iter_rows()
        ):
            hosts[(comm, rank)] = (host, None)
    rank_rows = ras.filter(pl.col("scope") == "rank").drop_nulls(["rank"])
    for comm, rank, host, gpu in rank_rows.select(["comm_hash", "rank", "host", "gpu"]).unique().iter_rows():
        if host:
            hosts[(comm, rank)] = (host, (gpu, "nccl_ras") if gpu is not None else None)
    return hosts


def _listed_since(comm_rows: pl.DataFrame, column: str, rank: int):
    """The first of a communicator's newest RAS rows (by ts) that all list ``rank`` in ``column``."""
    since = None
    for ts, text in reversed(comm_rows.select(["ts", column]).rows()):
        if rank not in _ranks(text):
            break
        since = ts
    return since


def _count_since(rank_rows: pl.DataFrame, count: int):
    """The first of a rank's newest RAS rows (by ts) that all report collective count ``count``."""
    since = None
    for ts, seen in reversed(rank_rows.select(["ts", "coll_count"]).rows()):
        if seen != count:
            break
        since = ts
    return since


def ras_findings(
    ras: pl.DataFrame,
    colls: pl.DataFrame | None = None,
    min_lag: int = 2,
    places: RankPlaces | None = None,
) -> list[Finding]:
    """Ranks NCCL RAS reports dead or unreachable, and a rank whose collective count stalls behind all others.

    Each is placed on its GPU by ``places`` (the rank_identity view), else on the GPU RAS names, else
    guessed from the rank number (the finding's evidence says which).
    """
    if ras.is_empty():
        return []
    places = places or RankPlaces()
    hosts = _rank_hosts(ras, colls)
    latest = ras.sort("ts").group_by(["comm_hash", "scope", "rank"], maintain_order=True).last()
    out: list[Finding] = []

    def add(comm: str, rank: int, detector: str, why: str, conf: float, ts, evidence: dict) -> None:
        host, hint = hosts.get((comm, rank), (None, None))
        where = places.of(comm, rank, host, hint)
        comp, node = (where.component, where.node) if where else (f"rank{rank}", f"rank{rank}")
        gpu_from = where.evidence if where else {"gpu_from": "unknown: no host or identity"}
        out.append(
            Finding(
                detector,
                "non_comm_hang",
                "gpu",
                comp,
                node,
                ts,
                ts,
                conf,
                "restart_job",
                f"NCCL RAS: rank {rank} of communicator {comm} {why}",
                {"comm": comm, "rank": rank, **evidence, **gpu_from},
                f"SELECT * FROM nccl_ras_status WHERE comm_hash = '{comm}' ORDER BY ts DESC LIMIT 50",
            )
        )

    by_time = ras.sort("ts")
    for r in latest.filter(pl.col("scope") == "communicator").iter_rows(named=True):
        # dated from the first of the trailing reports that name the rank, not from the newest one
        mine = by_time.filter((pl.col("scope") == "communicator") & (pl.col("comm_hash") == r["comm_hash"]))
        for rank in _ranks(r["dead_ranks"]):
            since = _listed_since(mine, "dead_ranks", rank) or r["ts"]
            add(r["comm_hash"], rank, "ras_dead_rank", "is dead", 0.95, since, {"status": r["status"]})
        for rank in _ranks(r["missing_ranks"]):
            if rank not in _ranks(r["dead_ranks"]):
                add(
                    r["comm_hash"],
                    rank,
                    "ras_missing_rank",
                    "cannot be reached",
                    0.85,
                    _listed_since(mine, "missing_ranks", rank) or r["ts"],
                    {"status": r["status"]},
                )
    ranks = latest.filter((pl.col("scope") == "rank") & pl.col("coll_count").is_not_null())
    for (comm,), g in ranks.group_by(["comm_hash"]):
        if g.height < 2:
            continue
        counts = g.sort("coll_count")
        low, second = counts.row(0, named=True), counts.row(1, named=True)
        if second["coll_count"] - low["coll_count"] >= min_lag and counts["coll_count"].n_unique() == 2:
            # one rank behind, every other rank at the same count: they wait in a collective it never issued
            stuck = by_time.filter(
                (pl.col("scope") == "rank")
                & (pl.col("comm_hash") == comm)
                & (pl.col("rank") == low["rank"])
                & pl.col("coll_count").is_not_null()
            )
            add(
                comm,
                low["rank"],
                "ras_lagging_rank",
                f"issued {low['coll_count']} collectives while the other {g.height - 1} issued {second['coll_count']}",
                0.9,
                _count_since(stuck, low["coll_count"]) or low["ts"],  # since its count stopped
                {"coll_count": low["coll_count"], "others": second["coll_count"]},
            )
    return out


def flight_recorder_findings(
    verdicts, places: RankPlaces | None = None, hosts: dict[int, str] | None = None
) -> list[Finding]:
    """One finding per rank a Flight Recorder verdict says never entered the collective the others wait in.

    Flight Recorder ranks are global: ``places`` places them as the largest communicator's ranks (the
    rank_identity view), ``hosts`` gives a rank's host when no identity is known.
    """
    places = places or RankPlaces()
    out = []
    for v in verdicts:
        for rank in v.missing:
            where = places.of_global(rank, (hosts or {}).get(rank))
            comp, node = (where.component, where.node) if where else (f"rank{rank}", f"rank{rank}")
            out.append(
                Finding(
                    "flight_recorder_missing_rank",
                    "non_comm_hang",
                    "gpu",
                    comp,
                    node,
                    None,
                    None,
                    0.9,
                    "restart_job",
                    f"Flight Recorder: rank {rank} never entered collective #{v.last_seq} ({v.op}) of process "
                    f"group {v.process_group} that {len(v.ranks) - len(v.missing)} ranks wait in",
                    {
                        "process_group": v.process_group,
                        "last_seq": v.last_seq,
                        "rank": rank,
                        "stuck": v.stuck,
                        **(where.evidence if where else {"gpu_from": "unknown: no host or identity"}),
                    },
                )
            )
    return out
