"""Per agent: how far its clock runs ahead of the collector's, and how many of its rows were clamped.

The estimate is the newest ``ts`` of a batch minus the collector's receive time, the largest over
an interval: the freshest batch of the interval decides (a backlog resent from the spool is older,
so it lowers the estimate of no interval that also saw a fresh batch). It is the node's clock
offset plus the time from sampling to receipt (at most about the agent's flush interval, so a
right clock shows a small negative value). One ``agent_clock`` row per agent per interval at most.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa


@dataclass
class _Window:
    node: str
    started_s: float  # monotonic
    skew_us: int
    clamped: int = 0
    batches: int = 1


class ClockWatch:
    """Collects per-agent skew and clamp counts; ``due()`` hands out the rows of finished intervals."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._windows: dict[str, _Window] = {}

    def observe(
        self, agent_id: str, node: str, newest_us: int | None, received_us: int, clamped: int
    ) -> None:
        """Note one admitted batch: the node its rows name, its newest time (before clamping), the rows clamped."""
        if newest_us is None:
            return
        skew = newest_us - received_us
        w = self._windows.get(agent_id)
        if w is None:
            self._windows[agent_id] = _Window(node, time.monotonic(), skew, clamped)
            return
        if skew > w.skew_us:
            w.skew_us = skew
        w.clamped += clamped
        w.batches += 1

    def due(self, now_s: float | None = None) -> list[dict]:
        """``agent_clock`` rows of every agent whose interval has run its length (those agents start afresh)."""
        now_s = time.monotonic() if now_s is None else now_s
        done = [a for a, w in self._windows.items() if now_s - w.started_s >= self.interval_s]
        if not done:
            return []
        ts = datetime.now(UTC).replace(tzinfo=None)
        rows = []
        for agent_id in done:
            w = self._windows.pop(agent_id)
            rows.append(
                {
                    "ts": ts,
                    "node": w.node,
                    "job": "",
                    "agent_id": agent_id,
                    "skew_s": w.skew_us / 1e6,
                    "rows_clamped": w.clamped,
                    "batches": w.batches,
                }
            )
        return rows


def node_of(table: pa.Table, agent_id: str) -> str:
    """The node the batch's rows name (its first row's), else the agent id."""
    if table.num_rows and "node" in table.column_names:
        node = table.column("node")[0].as_py()
        if node:
            return node
    return agent_id
