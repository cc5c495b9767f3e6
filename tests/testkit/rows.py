"""Rows of catalogue tables for tests that build batches by hand."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from c4.catalogue import load


def heartbeat_rows(node: str, ticks: range, ts: datetime | None = None) -> pa.Table:
    """``agent_heartbeat`` rows of one node, one per tick (``tick`` holds the tick number)."""
    spec = load()["agent_heartbeat"]
    rows = [
        {
            "ts": ts or datetime(2026, 1, 1),
            "node": node,
            "job": "",
            "agent_id": node,
            "boot_ns": 1,
            "tick": t,
            "uptime_s": 0.0,
        }
        for t in ticks
    ]
    return pa.Table.from_pylist(rows, schema=spec.arrow_schema)
