"""One diagnosis pass: every detector over one window of tables."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from c4.analytics.collective import (
    comm_hang_findings,
    hang_findings,
    iteration_period_s,
    slow_connection_findings,
    straggler_findings,
)
from c4.analytics.fabric import FabricModel
from c4.analytics.findings import Finding
from c4.analytics.hang_sources import ras_findings
from c4.analytics.hardware import hardware_findings
from c4.analytics.host_stall import joined_with_host
from c4.analytics.p2p_links import DETECTOR as P2P_LINK
from c4.analytics.p2p_links import slow_link_findings
from c4.analytics.periods import comm_periods, job_periods
from c4.analytics.rank_gpu import RankPlaces
from c4.analytics.step_jobs import JobAttribution, job_attributions


def _explained_by_congestion(found: list[Finding]) -> list[Finding]:
    """Slow connections on nodes whose NICs see CNPs without errors are congestion, not a hardware fault."""
    congested = {n for f in found if f.fault_class == "congestion" for n in f.evidence.get("nodes", [f.node])}
    if not congested:
        return found
    return [f for f in found if not (f.fault_class == "comm_slow" and f.node in congested)]


def by_time(df: pl.DataFrame) -> pl.DataFrame:
    """The frame ordered by ts, flagged so detectors' sorts are free (loaders already ORDER BY ts)."""
    if df.is_empty() or "ts" not in df.columns:
        return df
    if df["ts"].is_sorted():
        return df.with_columns(pl.col("ts").set_sorted())
    return df.sort("ts")


def _judged_by_trace(found: list[Finding], attributions: list[JobAttribution]) -> list[Finding]:
    """A job whose step trace was attributed is judged by its dependency graph, not by Inspector's
    arrival order: its straggler and pipeline-link findings go (in a pipeline the ranks that only wait
    arrive late too, and the replay tells them from the cause and costs a slow link from its steps);
    jobs without a trace keep theirs."""
    traced = {a.job for a in attributions if a.steps > 0}
    return [f for f in found if not (f.detector in ("straggler", P2P_LINK) and f.job in traced)]


def joined_with_hardware(found: list[Finding]) -> list[Finding]:
    """A slow worker is a hardware suspect: join it with what its GPU's counters say (throttling, Xids,
    ECC, PCIe/NVLink, its state) and take their action (drain, reset); a slow worker no counter
    explains stays a question for the job (``investigate``). A slow pipeline link gets the faults of
    its ends' NIC ports as evidence."""
    joined = ("step_attribution", P2P_LINK)
    hardware = [f for f in found if f.detector not in joined and f.fault_class != "congestion"]
    for f in found:
        if f.detector not in joined or f.fault_class not in ("slow_worker", "slow_comm"):
            continue
        if f.fault_class == "slow_worker":
            gpus = set(f.evidence.get("gpus") or [f.component])
            hits = [h for h in hardware if h.component_type == "gpu" and h.component in gpus]
        else:
            hosts = {end.split("/")[0] for end in f.component.split("->")}
            hits = [h for h in hardware if h.component_type == "nic_port" and h.node in hosts]
        f.evidence["hardware"] = sorted(h.fault_id for h in hits)
        if hits:
            first = max(hits, key=lambda h: h.confidence)
            f.action = first.action
            f.summary += f"; hardware: {first.summary}"
        elif f.fault_class == "slow_worker":
            f.summary += "; no GPU counter explains it (not throttled, no Xid, ECC or link errors)"
    return found


def diagnose(
    tables: dict[str, pl.DataFrame],
    fabric: FabricModel | None = None,
    now: datetime | None = None,
    attributions: list[JobAttribution] | None = None,
) -> list[Finding]:
    """Hardware and collective findings, most certain first.

    ``now`` is the clock the window ends at (None: the data's newest row); a hang is measured up to
    the newest row, but never past ``now``, so rows from a node whose clock runs ahead fake no stall.

    ``fabric`` maps each connection to the switch links it crosses (from C4P's plan or the ECMP
    hash model over the topology); without it a slow switch link is reported at the connection level.

    ``attributions``: the step-time attribution of the window's step_ops (None: computed here); their
    findings name causes and list the ranks that only waited on them as affected.
    """
    empty = pl.DataFrame()
    tables = {k: by_time(v) for k, v in tables.items()}
    colls = tables.get("nccl_collectives", empty)
    conns = tables.get("nccl_connections", empty)
    gpus = tables.get("gpu_samples", empty)
    found = hardware_findings(tables)
    places = RankPlaces(tables.get("rank_identity"), gpus)  # which GPU each rank runs on
    ras = tables.get("nccl_ras_status", empty)
    if not ras.is_empty():
        found += ras_findings(ras, colls, places=places)
    if not colls.is_empty():
        newest = max(x["ts"].max() for x in (colls, gpus) if not x.is_empty())
        periods = comm_periods(colls)  # per job and communicator, shared by the hang and the windows
        found += hang_findings(
            colls, gpus, min(newest, now) if now else newest, places=places, periods=periods
        )
        # slow pipeline links first: the stragglers of their replicas are their victims
        links = slow_link_findings(colls, places, job_periods(colls, periods))
        found += straggler_findings(colls, places=places, conns=conns, links=links) + links
        period = iteration_period_s(colls, periods)
        found += comm_hang_findings(conns, period)
        found += slow_connection_findings(conns, colls, fabric=fabric, period_s=period)
    elif not conns.is_empty():
        found += comm_hang_findings(conns, None) + slow_connection_findings(conns, fabric=fabric)
    if attributions is None:
        attributions = job_attributions(tables.get("step_ops", empty))
    found = joined_with_hardware(
        _judged_by_trace(found, attributions) + [f for a in attributions for f in a.findings]
    )
    found = joined_with_host(found, tables.get("host_cpu", empty), gpus)
    return sorted(_explained_by_congestion(found), key=lambda f: (-f.confidence, f.component))
