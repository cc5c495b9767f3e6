"""Hang localization from NCCL's own reports: RAS missing/dead ranks and lagging collective counts, and
PyTorch Flight Recorder verdicts; each names the rank (and through it the GPU) the job waits for."""

from __future__ import annotations

import polars as pl

from c4.analytics.findings import Finding


def _ranks(text: str | None) -> list[int]:
    """'3,17' -> [3, 17] (RAS lists ranks comma separated; blanks and junk are skipped)."""
    return [int(x) for x in (text or "").replace(" ", "").split(",") if x.lstrip("-").isdigit()]


def _rank_places(
    ras: pl.DataFrame, colls: pl.DataFrame | None
) -> dict[tuple[str, int], tuple[str, int | None]]:
    """(communicator, rank) -> (host, GPU) from RAS rank rows, else from the collectives' hostnames."""
    places: dict[tuple[str, int], tuple[str, int | None]] = {}
    if colls is not None and not colls.is_empty():
        for comm, rank, host in (
            colls.select(["comm_id", "rank", "hostname"]).unique(["comm_id", "rank"]).iter_rows()
        ):
            places[(comm, rank)] = (host, None)
    rank_rows = ras.filter(pl.col("scope") == "rank").drop_nulls(["rank"])
    for comm, rank, host, gpu in rank_rows.select(["comm_hash", "rank", "host", "gpu"]).unique().iter_rows():
        if host:
            places[(comm, rank)] = (host, gpu)
    return places


def ras_findings(ras: pl.DataFrame, colls: pl.DataFrame | None = None, min_lag: int = 2) -> list[Finding]:
    """Ranks NCCL RAS reports dead or unreachable, and a rank whose collective count stalls behind all others."""
    if ras.is_empty():
        return []
    places = _rank_places(ras, colls)
    latest = ras.sort("ts").group_by(["comm_hash", "scope", "rank"], maintain_order=True).last()
    out: list[Finding] = []

    def add(comm: str, rank: int, detector: str, why: str, conf: float, ts, evidence: dict) -> None:
        host, gpu = places.get((comm, rank), (f"rank{rank}", None))
        comp = f"{host}/gpu{gpu if gpu is not None else rank % 8}" if not host.startswith("rank") else host
        out.append(
            Finding(
                detector,
                "non_comm_hang",
                "gpu",
                comp,
                host,
                ts,
                ts,
                conf,
                "restart_job",
                f"NCCL RAS: rank {rank} of communicator {comm} {why}",
                {"comm": comm, "rank": rank, **evidence},
                f"SELECT * FROM nccl_ras_status WHERE comm_hash = '{comm}' ORDER BY ts DESC LIMIT 50",
            )
        )

    for r in latest.filter(pl.col("scope") == "communicator").iter_rows(named=True):
        for rank in _ranks(r["dead_ranks"]):
            add(r["comm_hash"], rank, "ras_dead_rank", "is dead", 0.95, r["ts"], {"status": r["status"]})
        for rank in _ranks(r["missing_ranks"]):
            if rank not in _ranks(r["dead_ranks"]):
                add(
                    r["comm_hash"],
                    rank,
                    "ras_missing_rank",
                    "cannot be reached",
                    0.85,
                    r["ts"],
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
            add(
                comm,
                low["rank"],
                "ras_lagging_rank",
                f"issued {low['coll_count']} collectives while the other {g.height - 1} issued {second['coll_count']}",
                0.9,
                low["ts"],
                {"coll_count": low["coll_count"], "others": second["coll_count"]},
            )
    return out


def flight_recorder_findings(
    verdicts, places: dict[int, tuple[str, int | None]] | None = None
) -> list[Finding]:
    """One finding per rank a Flight Recorder verdict says never entered the collective the others wait in."""
    out = []
    for v in verdicts:
        for rank in v.missing:
            host, gpu = (places or {}).get(rank, (f"rank{rank}", None))
            comp = (
                f"{host}/gpu{gpu if gpu is not None else rank % 8}" if not host.startswith("rank") else host
            )
            out.append(
                Finding(
                    "flight_recorder_missing_rank",
                    "non_comm_hang",
                    "gpu",
                    comp,
                    host,
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
                    },
                )
            )
    return out
