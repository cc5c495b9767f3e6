"""C4D inside the collector: scheduled diagnosis passes, the faults rows they store, the alerts and
isolation those trigger, and operators' acknowledge/resolve.

The detectors themselves are analytics' (``DiagnosisRunner`` over a store cursor); this module only
runs them off the event loop, commits their rows through the writer thread, and hands the faults to
the configured alert sinks and isolation hook.

On a lake shared by several collectors only the holder of the diagnosis lease (``lease.py``) runs
diagnosis, alerts and remediation. Everything that decides "never twice" lives in the lake (faults,
actions, remediation_holds), so a collector that takes the lease over loads it then (``start``),
and while it leads it takes in the operators' acknowledge/resolve and holds that other collectors
stored (``sync_from_lake``): each operator action once, by its actions row, whenever it was stored
(before the takeover, between the takeover and the first sync, or committed after a newer one).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from c4.analytics.account_jobs import JobAccounts
from c4.analytics.actions import SENT_SQL, AlertmanagerSink, Notifier, SlackSink, WebhookSink
from c4.analytics.fabric import capacities_from_topology
from c4.analytics.holds import HoldBook
from c4.analytics.lifecycle import FaultBook
from c4.analytics.recovery import RecoveryWatch
from c4.analytics.remediation import (
    ACTIONS_THAT_DRAIN,
    ACTIONS_THAT_RESTART,
    Hold,
    HoldPolicy,
    RemediationStep,
    apply_in_order,
    held_sql,
    taken_sql,
)
from c4.analytics.runner import DiagnosisRunner
from c4.collector.holds import CURRENT_HOLDS_SQL
from c4.collector.ingest import Metrics
from c4.collector.lease import Lease, SoleLease
from c4.collector.store import PendingBatch, Store
from c4.collector.writer import Writer
from c4.config import CollectorConfig

log = logging.getLogger("c4.collector.diagnosis")

#: The longest operator note kept in the actions table, in characters.
NOTE_MAX_CHARS = 500
#: How far behind the newest operator action a lake leader looks again at every sync, in seconds: an
#: action stamped by a collector whose clock runs behind, or committed after a newer one, still lands
#: within it (each is taken in once: the leader remembers those it took for this long).
OPS_LOOKBACK_S = 120.0

#: Operators' acknowledge/resolve rows stored since a time.
OPERATOR_OPS_SQL = (
    "SELECT fault_id, fault_state, ts FROM actions WHERE sink = 'operator' AND ts > ? "
    "AND fault_state IN ('acknowledged', 'resolved') ORDER BY ts"
)
#: The newest operator row of any kind (the leader's starting point; its book reflects what is older).
NEWEST_OPERATOR_OP_SQL = (
    "SELECT coalesce(max(ts), TIMESTAMP '1970-01-01') FROM actions WHERE sink = 'operator'"
)
#: Per fault given (``$1``), its newest operator acknowledge in the fault's current episode: after the
#: fault's last resolution, if any (an acknowledge of an earlier episode does not carry over).
CURRENT_ACKS_SQL = """
SELECT a.fault_id, max(a.ts) AS ts FROM actions a
WHERE a.sink = 'operator' AND a.fault_state = 'acknowledged' AND a.fault_id IN (SELECT unnest($1::VARCHAR[]))
  AND a.ts > coalesce((SELECT max(f.ts) FROM faults f WHERE f.fault_id = a.fault_id AND f.state = 'resolved'),
                      TIMESTAMP '1970-01-01')
GROUP BY a.fault_id
"""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def alert_actions(cfg: CollectorConfig) -> Notifier | None:
    """Alert sinks from the config (None when none is configured)."""
    sinks = [WebhookSink(u) for u in cfg.alert_webhook_urls]
    if cfg.alertmanager_url:
        sinks.append(AlertmanagerSink(cfg.alertmanager_url))
    if cfg.slack_webhook_url:
        sinks.append(SlackSink(cfg.slack_webhook_url))
    return Notifier(sinks) if sinks else None


def config_hold(cfg: CollectorConfig) -> Hold:
    """The config's hold on remediation (remediation_hold, remediation_hold_jobs)."""
    return Hold(cfg.remediation_hold, frozenset(cfg.remediation_hold_jobs))


def remediation_steps(cfg: CollectorConfig, job_of, hold: HoldPolicy | None = None) -> list[RemediationStep]:
    """Isolation then job restart, as configured (in that order; an unconfigured step is absent)."""
    hold = hold or config_hold(cfg)
    steps = []
    if cfg.isolation_command:
        steps.append(
            RemediationStep(
                "isolation",
                cfg.isolation_command,
                ACTIONS_THAT_DRAIN,
                cfg.isolation_dry_run,
                hold,
                cfg.remediation_timeout_s,
                job_of=job_of,
            )
        )
    if cfg.restart_template:
        steps.append(
            RemediationStep(
                "restart",
                cfg.restart_template,
                ACTIONS_THAT_RESTART,
                cfg.restart_dry_run,
                hold,
                cfg.remediation_timeout_s,
                needs_job=True,
                job_of=job_of,
            )
        )
    return steps


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
        lease: Lease | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.writer = writer
        self.metrics = metrics
        self.pool = pool
        self.runner: DiagnosisRunner | None = None  # set by start(): scheduled diagnosis is on
        self.notifier: Notifier | None = None
        self.remediation: list[RemediationStep] = []
        #: the config's holds and operators' (loaded from the store by the collector, set by SetHold)
        self.holds = HoldBook(config_hold(cfg))
        self.recovery = RecoveryWatch()
        self.accounts = JobAccounts(
            cfg.accounting_window_s,
            cfg.accounting_interval_s,
            cfg.checkpoint_interval_s,
            cfg.max_clock_skew_s,
        )
        self._resuming: set[asyncio.Task] = set()  # held steps running after a release
        # A diagnosis pass and a hold's release may offer the same fault from two pool threads: one
        # takes its steps at a time, in order (apply_in_order).
        self._remediating = threading.Lock()
        #: the lake's diagnosis lease (None: this collector is alone on its store and always leads)
        self.shared = lease is not None
        self.lease: Lease = lease or SoleLease()
        self.leading = False  # whether this collector runs diagnosis, alerts and remediation now
        self.leader = ""  # the shard that leads, as last seen ('' unknown)
        #: while leading a lake: the newest operator actions row seen (None: not leading), and the
        #: operator rows (fault_id, ts) of the last ``ops_lookback_s`` before it already taken in or
        #: written through this collector (older ones are forgotten: the set stays small)
        self._ops_seen: datetime | None = None
        self._ops_taken: set[tuple[str, datetime]] = set()
        self.ops_lookback_s = OPS_LOOKBACK_S
        #: how far behind the clock the agents' newest data may be because the collectors asked them to
        #: flush less often (``FlushAdvisor.lag_s``); set by the Collector
        self.advised_lag_s: Callable[[], float] = lambda: 0.0
        #: this collector's own part of it (its agents' advice), recorded for a lake's leader; set by the Collector
        self.own_lag_s: Callable[[], float] = lambda: 0.0

    async def lead(self) -> bool:
        """Take or renew the diagnosis lease; on taking it load the state the store holds (``start``),
        on losing it stop alerting and remediating at once. Returns whether this collector leads."""
        loop = asyncio.get_running_loop()
        held = await loop.run_in_executor(self.pool, self.lease.hold)
        if self.shared:  # the leader looks as far behind the clock as any collector's advice asks
            await loop.run_in_executor(self.pool, self.lease.report_lag, self.own_lag_s())
        if held and not self.leading:
            await loop.run_in_executor(self.pool, self.start)
            self.leading = True
            self.metrics.inc("diagnosis_leadership_taken")
            log.info("diagnosis leader now shard=%s open_faults=%d", self.shard, self._open_count())
        elif not held and self.leading:
            self.stop_leading()
        if self.shared and not held:  # a follower's ListHolds shows the holds set through any collector
            await loop.run_in_executor(self.pool, self._reload_holds)
        leader = await loop.run_in_executor(self.pool, self.lease.holder) if self.shared else self.shard
        if leader != self.leader and not held:
            log.info("diagnosis follower shard=%s leader=%s", self.shard, leader or "-")
        self.leader = leader
        return held

    def stop_leading(self) -> None:
        """Lease lost: no more diagnosis passes, alerts or remediation from this collector."""
        self._ops_seen = None
        self._ops_taken = set()
        self.leading = False
        self.runner = None
        self.notifier = None
        self.remediation = []
        self.metrics.inc("diagnosis_leadership_lost")
        log.warning("diagnosis leadership lost shard=%s: another collector takes over", self.shard)

    @property
    def shard(self) -> str:
        """This collector's shard on a lake ('local' alone on its store)."""
        return getattr(self.store, "shard", "") or "local"

    def _open_count(self) -> int:
        return len(self.runner.book.open) if self.runner is not None else 0

    async def diagnose_if_leading(self) -> None:
        """A diagnosis pass when this collector leads (after taking in what other collectors stored)."""
        if not self.leading or self.runner is None:
            return
        if self.shared:
            await self.sync_from_lake()
        await self.diagnose()

    async def sync_from_lake(self) -> None:
        """Take in operators' acknowledge/resolve and holds that other collectors stored; announce the
        resolves, and run the held steps a release let go."""
        loop = asyncio.get_running_loop()
        resolved, released = await loop.run_in_executor(self.pool, self._stored_updates)
        if resolved and self.notifier is not None:
            actions = await loop.run_in_executor(self.pool, self.notifier.notify, resolved)
            if actions:
                await self.writer.submit_async(
                    PendingBatch.internal(self.store.catalogue["actions"], actions)
                )
        if released:
            await self.resume_held()

    def _stored_updates(self) -> tuple[list[dict], bool]:
        """Newer operator rows for the book's open faults, applied to the book (the resolved ones
        returned), and whether any hold was released since the last look (blocking: reads the store)."""
        runner = self.runner
        if runner is None or self._ops_seen is None:  # not leading (start() sets both on a lake)
            return [], False
        with runner.lock:
            watched = set(runner.book.open)
        # Operators' actions rows, not the faults' latest rows: a pass of this leader may store an open row
        # after an acknowledge stored through another collector, and that acknowledge must still apply.
        # Looked up by their time, again over the last ops_lookback_s: an action may commit after a newer
        # one, or be stamped by a collector whose clock runs behind; each is taken in once.
        cur = self.store.cursor()
        try:
            seen = self._ops_seen
            ops = cur.execute(OPERATOR_OPS_SQL, [seen - timedelta(seconds=self.ops_lookback_s)]).fetchall()
            newer = []
            for fault_id, state, ts in ops:
                seen = max(seen, ts)
                if (fault_id, ts) in self._ops_taken:
                    continue
                self._ops_taken.add((fault_id, ts))
                if fault_id not in watched:
                    continue
                newer += self._operator_row(cur, fault_id, state)
        finally:
            cur.close()
        self._ops_seen = seen
        floor = seen - timedelta(seconds=self.ops_lookback_s)
        self._ops_taken = {op for op in self._ops_taken if op[1] > floor}
        with runner.lock:
            runner.book.take_stored(newer)
        for r in newer:
            log.info("fault state taken from the lake fault_id=%s state=%s", r["fault_id"], r["state"])
        released = self._reload_holds()
        return [r for r in newer if r["state"] == "resolved"], bool(released)

    @staticmethod
    def _operator_row(cur, fault_id: str, state: str) -> list[dict]:
        """The newest faults row an operator's ``state`` change of ``fault_id`` stored (none if absent)."""
        return (
            cur.execute(
                "SELECT * FROM faults WHERE fault_id = ? AND state = ? ORDER BY ts DESC LIMIT 1",
                [fault_id, state],
            )
            .to_arrow_table()
            .to_pylist()
        )

    def _take_over_ops(self, cur) -> None:
        """As a new lake leader (``cur``: before the book is loaded): where operator rows start, the
        recent ones as taken in (the book, read after, reflects them), and after loading the book, the
        acknowledges of open faults a previous leader had not taken in (it stored an open row after
        one and died before its next sync)."""
        (self._ops_seen,) = cur.execute(NEWEST_OPERATOR_OP_SQL).fetchone()
        floor = self._ops_seen - timedelta(seconds=self.ops_lookback_s)
        self._ops_taken = {
            (f, ts) for f, _, ts in cur.execute(OPERATOR_OPS_SQL, [floor]).fetchall() if ts <= self._ops_seen
        }

    def _take_missed_acks(self, cur) -> list[dict]:
        """The acknowledge rows of this episode of each fault the loaded book has open, not acknowledged."""
        assert self.runner is not None
        with self.runner.lock:
            unacked = sorted(f for f, r in self.runner.book.open.items() if r.get("state") == "open")
        if not unacked:
            return []
        rows = []
        for fault_id, _ in cur.execute(CURRENT_ACKS_SQL, [unacked]).fetchall():
            rows += self._operator_row(cur, fault_id, "acknowledged")
        with self.runner.lock:
            self.runner.book.take_stored(rows)
        for r in rows:
            log.info("fault acknowledge taken from the lake at takeover fault_id=%s", r["fault_id"])
        return rows

    def _reload_holds(self) -> set[tuple[str, str]]:
        """Operators' holds as the store has them now (set through any collector); the released ones."""
        cur = self.store.cursor()
        try:
            rows = cur.execute(CURRENT_HOLDS_SQL).to_arrow_table().to_pylist()
        finally:
            cur.close()
        released = self.holds.reload(rows)
        for scope, job in released:
            log.info("remediation hold released through another collector scope=%s job=%s", scope, job or "-")
        return released

    def start(self) -> None:
        """Build the runner (with the fabric's link rates), the alert sinks and the isolation hook,
        and pick up the faults a previous collector process left open."""
        self.runner = DiagnosisRunner(
            self.store.catalogue,
            self.cfg.diagnose_window_s,
            max_skew_s=self.cfg.max_clock_skew_s,
            delivery_lag_s=self.cfg.diagnose_delivery_lag_s,
        )
        if self.cfg.fabric_topology:
            self.runner.capacity_gbps = capacities_from_topology(self.cfg.fabric_topology)
        self.notifier = alert_actions(self.cfg)
        self.remediation = remediation_steps(self.cfg, self._job_of, self.holds)
        cur = self.store.cursor()
        try:
            if self.shared:  # before the book: what it reflects
                self._take_over_ops(cur)
            self.runner.resume(cur)
            if self.shared:
                self._take_missed_acks(cur)
            for step in self.remediation:  # never twice for one fault: the stored outcomes decide
                step.load(
                    [r[0] for r in cur.execute(taken_sql(step.sink)).fetchall()],
                    [r[0] for r in cur.execute(held_sql(step.sink)).fetchall()],
                )
            self.recovery.load(cur)
            if self.notifier is not None:  # never alerted twice: what a sink accepted, any collector
                self.notifier.load(cur.execute(SENT_SQL).fetchall())
        finally:
            cur.close()

    def _job_of(self, fault: dict) -> str:
        """The fault's job, else the job its node's agent last reported (blocking: reads the store)."""
        if fault.get("job"):
            return fault["job"]
        cur = self.store.cursor()
        try:
            row = cur.execute(
                "SELECT arg_max(job, ts) FROM nodes WHERE node = ? AND job <> ''", [fault.get("node") or ""]
            ).fetchone()
        finally:
            cur.close()
        return (row[0] if row else None) or ""

    async def diagnose(self) -> None:
        """Run C4D over the recent window (in a worker thread) and store the faults it found."""
        loop = asyncio.get_running_loop()
        runner = self.runner
        assert runner is not None, "start() first"

        def work():
            cur = self.store.cursor()
            try:
                now = _now()
                runner.delivery_lag_s = max(self.cfg.diagnose_delivery_lag_s, self.advised_lag_s())
                table = runner.run_once(cur, now)
                return (
                    table,
                    runner.attribution,
                    self.recovery.observe(cur, runner.window_s, runner.max_skew_s),
                    self.accounts.account(cur, now),
                )
            finally:
                cur.close()

        table, attribution, observed, accounts = await loop.run_in_executor(self.pool, work)
        if accounts:  # what each job's time went to (job_accounting; read job_accounting_current)
            stored = await self.writer.submit_async(
                PendingBatch.internal(self.store.catalogue["job_accounting"], accounts)
            )
            if stored.error:
                raise RuntimeError(f"could not store {len(accounts)} job_accounting rows: {stored.error}")
            self.metrics.inc("job_accounting_rows_written", len(accounts))
        if observed:  # recovery stages seen in telemetry (restarted, recovered)
            stored = await self.writer.submit_async(
                PendingBatch.internal(self.store.catalogue["fault_observations"], observed)
            )
            if stored.error:
                raise RuntimeError(f"could not store {len(observed)} fault_observations rows: {stored.error}")
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
            with self._remediating:  # isolation first, then the job's restart
                rows += apply_in_order(self.remediation, faults)
            return rows

        actions = await loop.run_in_executor(self.pool, act)
        if actions:
            await self.writer.submit_async(PendingBatch.internal(self.store.catalogue["actions"], actions))

    async def resume_held(self) -> int:
        """After a hold was released: take, in the background, the held steps of open faults no hold
        covers any more; returns how many steps will run (each step still runs at most once per fault)."""
        if self.runner is None or not self.remediation:
            return 0
        loop = asyncio.get_running_loop()
        faults, steps = await loop.run_in_executor(self.pool, self._released_faults)
        if faults:
            task = asyncio.create_task(self._take_released(faults))
            self._resuming.add(task)
            task.add_done_callback(self._resuming.discard)
        return steps

    def _released_faults(self) -> tuple[list[dict], int]:
        """The open faults with a held step that may run now, and how many steps that is (blocking)."""
        assert self.runner is not None
        with self.runner.lock:
            open_faults = {f: r for f, r in self.runner.book.open.items() if r.get("state") == "open"}
        chosen: dict[str, dict] = {}
        steps = 0
        for step in self.remediation:
            for fault_id in sorted(step.pending()):
                fault = open_faults.get(fault_id)
                if fault is None or fault["action"] not in step.applies_to:
                    continue
                if self.holds.reason(self._job_of(fault)):
                    continue  # still held (another hold covers its job)
                chosen[fault_id] = fault
                steps += 1
        return list(chosen.values()), steps

    async def _take_released(self, faults: list[dict]) -> None:
        """Isolation then restart for faults whose hold was released; their actions rows stored."""
        loop = asyncio.get_running_loop()

        def act():
            rows = []
            with self._remediating:
                rows += apply_in_order(self.remediation, faults)
            return rows

        try:
            actions = await loop.run_in_executor(self.pool, act)
            if actions:
                stored = await self.writer.submit_async(
                    PendingBatch.internal(self.store.catalogue["actions"], actions)
                )
                if stored.error:
                    log.error("could not store %d remediation actions rows: %s", len(actions), stored.error)
        except Exception:
            log.exception("remediation after a released hold failed")

    async def update_fault(self, fault_id: str, state: str, by: str, note: str) -> tuple[str, dict]:
        """Apply an operator's acknowledge/resolve; returns (previous state, the new faults row)."""
        loop = asyncio.get_running_loop()
        prev, row = await loop.run_in_executor(self.pool, self._set_state, fault_id, state)
        action = operator_action_row(fault_id, row, state, by, note)
        if self.leading and self.shared:  # a leader does not take its own update in again
            self._ops_taken.add((fault_id, action["ts"]))
        await self.store_faults([row], [action])
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
                .to_arrow_table()
                .to_pylist()
            )
        finally:
            cur.close()
        return found[0] if found else None
