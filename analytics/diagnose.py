"""One diagnosis pass: every detector over one window of tables."""

from __future__ import annotations

import polars as pl

from c4.analytics.collective import (
    comm_hang_findings,
    hang_findings,
    iteration_period_s,
    slow_connection_findings,
    straggler_findings,
)
from c4.analytics.findings import Finding
from c4.analytics.hardware import hardware_findings


def diagnose(tables: dict[str, pl.DataFrame]) -> list[Finding]:
    """Hardware and collective findings, most certain first."""
    empty = pl.DataFrame()
    colls = tables.get("nccl_collectives", empty)
    conns = tables.get("nccl_connections", empty)
    gpus = tables.get("gpu_samples", empty)
    found = hardware_findings(tables)
    if not colls.is_empty():
        now = max(x["ts"].max() for x in (colls, gpus) if not x.is_empty())
        found += hang_findings(colls, gpus, now) + straggler_findings(colls)
        found += comm_hang_findings(conns, iteration_period_s(colls)) + slow_connection_findings(conns, colls)
    elif not conns.is_empty():
        found += comm_hang_findings(conns, None) + slow_connection_findings(conns)
    return sorted(found, key=lambda f: (-f.confidence, f.component))
