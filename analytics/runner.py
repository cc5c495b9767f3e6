"""Runs the diagnosis on a schedule inside the collector: read the recent window, detect, write faults."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa

from c4.analytics.diagnose import diagnose
from c4.analytics.fabric import from_plans
from c4.analytics.hang import silent_hangs
from c4.analytics.lifecycle import FaultBook
from c4.analytics.step_jobs import AttributionMemo, attribution_rows, job_attributions
from c4.analytics.window import ABSURD_TS, DEFAULT_MAX_CLOCK_SKEW_S, window_from_cursor

log = logging.getLogger("c4.analytics.runner")


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class DiagnosisRunner:
    """One diagnosis pass per call; keeps the fault book between passes."""

    def __init__(
        self,
        catalogue,
        window_s: float = 120.0,
        resolve_after_runs: int = 3,
        fabric=None,
        max_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
        delivery_lag_s: float = 0.0,
    ) -> None:
        self.catalogue = catalogue
        self.fabric = fabric  # FabricModel or None: then the newest C4P plan in the store, if any
        self.capacity_gbps: dict[str, float] = {}  # nominal switch link rates (from the fabric YAML)
        self._plan_id: str | None = None
        self.window_s = window_s
        self.max_skew_s = max_skew_s  # rows further ahead of the clock than this are not "now"
        #: look this far behind the clock: agents that flush every few seconds have each delivered up to
        #: then, so no node's latest seconds are missing while the others' are there (0: up to the clock)
        self.delivery_lag_s = delivery_lag_s
        self.book = FaultBook(resolve_after_runs)
        self.runs = 0
        #: step_attribution rows of the last pass (per job: actual vs ideal step time, cost by worker/stage/op)
        self.attribution = pa.table({})
        self.attribution_memo = AttributionMemo()  # a job's steps are replayed once, not on every pass
        self.lock = threading.Lock()  # the book is shared with operators' acknowledge/resolve

    def resume(self, cur) -> None:
        """Pick up faults left open by a previous collector process."""
        # rows an older version stamped with absurd times (its data's) cannot be converted: skip them
        sane = " AND ".join(f"coalesce({c}, ts) < {ABSURD_TS}" for c in ("ts", "first_seen", "last_seen"))
        rows = cur.execute(f"SELECT * FROM faults_current WHERE {sane}").pl().to_dicts()
        self.book.load(rows)

    def plan_fabric(self, cur, now: datetime | None = None):
        """The fabric model of the newest plan in the store's ``plans`` table (rebuilt when a new plan lands).

        A plan dated further ahead of ``now`` than the skew (its writer's clock ran ahead) is not the newest,
        nor is one the collector's replan only stored (plan_runs.applied dry_run, or failed to write): the
        network does not route by it.
        """
        latest = (now or _utcnow()) + timedelta(seconds=self.max_skew_s)
        newest = cur.execute(
            "SELECT plan_id FROM plans WHERE ts <= ? AND plan_id NOT IN (SELECT plan_id FROM plan_runs "
            "WHERE applied = 'dry_run' OR applied LIKE 'failed:%') ORDER BY ts DESC LIMIT 1",
            [latest],
        ).fetchone()
        if newest is None:
            return None
        if newest[0] != self._plan_id:
            rows = cur.execute("SELECT * FROM plans WHERE plan_id = ?", [newest[0]]).pl()
            self._plan_model = from_plans(rows, self.capacity_gbps)
            self._plan_id = newest[0]
        return self._plan_model

    def run_once(self, cur, now: datetime | None = None) -> pa.Table:
        """Detect over the window ending at ``now`` (default: this host's clock); returns the faults rows to store."""
        now = (now or _utcnow()) - timedelta(seconds=self.delivery_lag_s)
        # behind the clock, rows past ``now`` are the ones not every node has delivered yet: cut there
        skew_s = 0.0 if self.delivery_lag_s else self.max_skew_s
        tables = window_from_cursor(cur, self.window_s, now, skew_s)
        jobs = job_attributions(tables.get("step_ops", pl.DataFrame()), memo=self.attribution_memo)
        findings = diagnose(tables, self.fabric or self.plan_fabric(cur, now), now, attributions=jobs)
        self.attribution = pa.Table.from_pylist(
            attribution_rows(jobs, now), schema=self.catalogue["step_attribution"].arrow_schema
        )
        colls = tables.get("nccl_collectives", pl.DataFrame())
        with self.lock:
            held = silent_hangs(list(self.book.open.values()), colls)
            rows = self.book.update(findings, now, held)
        self.runs += 1
        if rows:
            log.info(
                "diagnosis run=%d findings=%d open_faults=%d", self.runs, len(findings), len(self.book.open)
            )
        return pa.Table.from_pylist(rows, schema=self.catalogue["faults"].arrow_schema)
