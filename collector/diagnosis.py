"""C4D inside the collector: scheduled diagnosis passes, the faults rows they store, the alerts and
isolation those trigger, and operators' acknowledge/resolve.

The detectors themselves are analytics' (``DiagnosisRunner`` over a store cursor); this module only
runs them off the event loop, commits their rows through the writer thread, and hands the faults to
the configured alert sinks and isolation hook.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from c4.analytics.actions import AlertmanagerSink, IsolationHook, Notifier, SlackSink, WebhookSink
from c4.analytics.fabric import capacities_from_topology
from c4.analytics.lifecycle import FaultBook
from c4.analytics.runner import DiagnosisRunner
from c4.collector.ingest import Metrics
from c4.collector.store import PendingBatch, Store
from c4.collector.writer import Writer
from c4.config import CollectorConfig

#: The longest operator note kept in the actions table, in characters.
NOTE_MAX_CHARS = 500


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def alert_actions(cfg: CollectorConfig) -> tuple[Notifier | None, IsolationHook | None]:
    """Alert sinks and the isolation hook from the config (None when not configured)."""
    sinks = [WebhookSink(u) for u in cfg.alert_webhook_urls]
    if cfg.alertmanager_url:
        sinks.append(AlertmanagerSink(cfg.alertmanager_url))
    if cfg.slack_webhook_url:
        sinks.append(SlackSink(cfg.slack_webhook_url))
    hook = IsolationHook(cfg.isolation_command, cfg.isolation_dry_run) if cfg.isolation_command else None
    return (Notifier(sinks) if sinks else None), hook


def operator_action_row(
    fault_id: str, fault: dict[str, Any], state: str, by: str, note: str
) -> dict[str, Any]:
    """The actions row that logs an operator's acknowledge/resolve (``fault``: the new faults row)."""
    return {
        "ts": _now(),
        "node": fault["node"],
        "job": fault.get("job") or "",
        "fault_id": fault_id,
        "sink": "operator",
        "target": by or "unknown",
        "fault_state": state,
        "outcome": "recorded",
        "attempts": 1,
        "detail": note[:NOTE_MAX_CHARS],
    }


class Diagnosis:
    """Runs C4D over the store, stores the faults it finds, alerts and isolates, and applies
    operators' fault updates; blocking work goes to ``pool``, commits to the writer thread."""

    def __init__(
        self,
        cfg: CollectorConfig,
        store: Store,
        writer: Writer,
        metrics: Metrics,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.writer = writer
        self.metrics = metrics
        self.pool = pool
        self.runner: DiagnosisRunner | None = None  # set by start(): scheduled diagnosis is on
        self.notifier: Notifier | None = None
        self.isolation: IsolationHook | None = None

    def start(self) -> None:
        """Build the runner (with the fabric's link rates), the alert sinks and the isolation hook,
        and pick up the faults a previous collector process left open."""
        self.runner = DiagnosisRunner(
            self.store.catalogue, self.cfg.diagnose_window_s, max_skew_s=self.cfg.max_clock_skew_s
        )
        if self.cfg.fabric_topology:
            self.runner.capacity_gbps = capacities_from_topology(self.cfg.fabric_topology)
        self.notifier, self.isolation = alert_actions(self.cfg)
        cur = self.store.cursor()
        try:
            self.runner.resume(cur)
        finally:
            cur.close()

    async def diagnose(self) -> None:
        """Run C4D over the recent window (in a worker thread) and store the faults it found."""
        loop = asyncio.get_running_loop()
        runner = self.runner
        assert runner is not None, "start() first"

        def work():
            cur = self.store.cursor()
            try:
                return runner.run_once(cur), runner.attribution
            finally:
                cur.close()

        table, attribution = await loop.run_in_executor(self.pool, work)
        if attribution.num_rows:  # each job's step-time breakdown, for the dashboard's job view
            stored = await self.writer.submit_async(
                PendingBatch.internal(self.store.catalogue["step_attribution"], attribution.to_pylist())
            )
            if stored.error:
                raise RuntimeError(
                    f"could not store {attribution.num_rows} step_attribution rows: {stored.error}"
                )
        if table.num_rows:
            await self.store_faults(table.to_pylist())

    async def store_faults(self, faults: list[dict], extra_actions: list[dict] | None = None) -> None:
        """Append faults rows, then alert and isolate (off the event loop) and log every action."""
        loop = asyncio.get_running_loop()
        stored = await self.writer.submit_async(PendingBatch.internal(self.store.catalogue["faults"], faults))
        if stored.error:
            raise RuntimeError(f"could not store {len(faults)} faults rows: {stored.error}")
        self.metrics.inc("fault_rows_written", len(faults))

        def act():  # network and commands off the event loop
            rows = list(extra_actions or [])
            if self.notifier is not None:
                rows += self.notifier.notify(faults)
            if self.isolation is not None:
                rows += self.isolation.apply(faults)
            return rows

        actions = await loop.run_in_executor(self.pool, act)
        if actions:
            await self.writer.submit_async(PendingBatch.internal(self.store.catalogue["actions"], actions))

    async def update_fault(self, fault_id: str, state: str, by: str, note: str) -> tuple[str, dict]:
        """Apply an operator's acknowledge/resolve; returns (previous state, the new faults row)."""
        loop = asyncio.get_running_loop()
        prev, row = await loop.run_in_executor(self.pool, self._set_state, fault_id, state)
        await self.store_faults([row], [operator_action_row(fault_id, row, state, by, note)])
        return prev, row

    def _set_state(self, fault_id: str, state: str) -> tuple[str, dict]:
        """The fault's state before, and its new faults row (blocking: reads the store)."""
        latest = self._latest_row(fault_id)
        if self.runner is not None:
            with self.runner.lock:
                prev = (self.runner.book.open.get(fault_id) or latest or {}).get("state", "")
                return prev, self.runner.book.set_state(fault_id, state, _now(), latest)
        return (latest or {}).get("state", ""), FaultBook().set_state(fault_id, state, _now(), latest)

    def _latest_row(self, fault_id: str) -> dict | None:
        """The newest faults row of ``fault_id`` in the store, or None."""
        cur = self.store.cursor()
        try:
            found = (
                cur.execute("SELECT * FROM faults WHERE fault_id = ? ORDER BY ts DESC LIMIT 1", [fault_id])
                .fetch_arrow_table()
                .to_pylist()
            )
        finally:
            cur.close()
        return found[0] if found else None
