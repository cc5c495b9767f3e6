"""C4P's closed loop inside the collector: after diagnosis, replan every job whose newest plan routes
pieces over a link C4D found down or degraded (or discovery saw vanish); store the new plan (plans,
plan_links, plan_runs), write it where configured (else a dry run), and announce it to the alert sinks.

What to replan is decided from the store alone (analytics/replan.py): a job is replanned once per
fault and link, across collector restarts too. Planning is traffic/replanning.py's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from c4.analytics.replan import (
    LINK_REASONS,
    RESTORED,
    LinkTrigger,
    Unmapped,
    fault_triggers,
    jobs_to_replan,
    jobs_to_restore,
    newest_plans,
    vanished_triggers,
)
from c4.collector.diagnosis import alert_actions
from c4.collector.ingest import Metrics
from c4.collector.store import PendingBatch, Store
from c4.collector.writer import Writer
from c4.config import CollectorConfig
from c4.traffic.apply.writer import ApplyError, write_apply
from c4.traffic.export import link_rows, plan_rows, plan_run_row
from c4.traffic.replanning import LOAD_SLACK, Replan, completion_s, degraded_rate_gbps, plan_from_rows, replan
from c4.traffic.topology import Topology, TopologyError, load_yaml

log = logging.getLogger("c4.collector.replan")

#: The newest row of every fault on a NIC port or switch cable, with when it last resolved (a fault that
#: opens again after that is a new episode).
LINK_FAULTS_SQL = """
SELECT *, max(ts) FILTER (WHERE state = 'resolved') OVER (PARTITION BY fault_id) AS resolved_before
FROM faults WHERE component_type IN ('switch_link', 'nic_port')
QUALIFY row_number() OVER (PARTITION BY fault_id ORDER BY ts DESC) = 1
"""
#: The network interface of each RDMA device of some nodes, as their agents last saw it.
NETDEVS_SQL = """
SELECT node, device, arg_max(netdev, ts) AS netdev FROM ib_port_samples
WHERE ts >= ? AND netdev <> '' AND list_contains(?, node) GROUP BY node, device
"""
#: Each job's newest plan (all its pieces).
NEWEST_PLANS_SQL = """
SELECT p.* FROM plans p
JOIN (SELECT job, arg_max(plan_id, ts) AS plan_id FROM plans GROUP BY job) n USING (job, plan_id)
"""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Decision:
    """One pass's answer: the fabric now, and each job to replan with its trigger and new plan."""

    topo: Topology
    replans: list[tuple[str, str, LinkTrigger, Replan]]
    unmapped: dict[str, int]
    failed: list[tuple[str, str]]  # (job, why) of jobs that could not be replanned
    # (job, plan_id, link) of replans back onto a restored link that would not have lowered the busiest
    # link's load by more than the slack: the plan stays (re-pinning a running job's QPs costs)
    kept: list[tuple[str, str, str]] = field(default_factory=list)


def read_frames(cur: duckdb.DuckDBPyConnection, since: datetime) -> dict[str, pl.DataFrame]:
    """The stored rows the decision rests on, NIC interfaces seen since ``since`` (blocking: reads the store)."""
    current = cur.execute("SELECT a_system, b_system FROM fabric_topology_current").pl()
    faults = cur.execute(LINK_FAULTS_SQL).pl()
    nodes = sorted(
        {c.partition("/")[0] for c in faults.filter(pl.col("component_type") == "nic_port")["component"]}
    )
    vanished = cur.execute("SELECT * FROM fabric_contradictions WHERE kind = 'vanished'").pl()
    runs = cur.execute("SELECT * FROM plan_runs").pl()
    findings = vanished.height or faults.filter(pl.col("state").is_in(["open", "acknowledged"])).height
    replanned = runs.height and runs.filter(pl.col("reason").is_in(LINK_REASONS)).height  # may go back
    return {
        "faults": faults,
        "netdevs": cur.execute(NETDEVS_SQL, [since, nodes]).pl(),
        "vanished": vanished,
        "current": current,
        # every job's newest plan only when a link finding or a replan off a link may need it (the usual
        # pass reads none)
        "plans": cur.execute(NEWEST_PLANS_SQL).pl() if findings or replanned else pl.DataFrame(),
        "runs": runs,
    }


def _crossing_bytes(rows: list[dict[str, Any]], a: str, b: str) -> float:
    """Bytes per collective a plan's pieces put on the busier direction of the cable a<->b."""
    up = down = 0.0
    for r in rows:
        hops = [r["src_port"], *(h for h in (r["path"] or "").split(">") if h), r["dst_port"]]
        pairs = set(zip(hops, hops[1:], strict=False))
        up += r["share_bytes"] if (a, b) in pairs else 0.0
        down += r["share_bytes"] if (b, a) in pairs else 0.0
    return max(up, down)


def fabric_now(fabric_yaml: str, triggers: list[LinkTrigger], plans: pl.DataFrame) -> Topology:
    """The fabric YAML with every trigger's link set down or at its rate now (a switch cable's from
    C4D's throughput ratio and the newest plan crossing it)."""
    topo = load_yaml(fabric_yaml)
    healthy = load_yaml(fabric_yaml)
    by_plan = {pid: g.to_dicts() for (pid,), g in plans.group_by(["plan_id"])} if not plans.is_empty() else {}
    for t in triggers:
        if t.reason in ("link_down", "link_vanished"):
            topo.set_state(t.a, t.b, "down")
            continue
        nominal = topo.link(t.a, t.b).capacity_gbps
        if t.rate_gbps is not None:
            rate = t.rate_gbps
        else:
            ratio = t.throughput_ratio or 1.0
            rate = nominal * ratio
            for rows in by_plan.values():
                carried = _crossing_bytes(rows, t.a, t.b)
                if carried <= 0:
                    continue
                try:
                    before_s = completion_s(plan_from_rows(healthy, rows))
                except TopologyError:  # a plan of another fabric: the ratio alone
                    continue
                rate = degraded_rate_gbps(nominal, ratio, carried, before_s)
                break
        if topo.link(t.a, t.b).state != "down":
            topo.set_state(t.a, t.b, "degraded", min(rate, nominal))
    return topo


def decide(
    frames: dict[str, pl.DataFrame],
    fabric_yaml: str,
    max_qps: int,
    load_slack: float = LOAD_SLACK,
    kept: frozenset[tuple[str, str, str]] = frozenset(),
) -> Decision:
    """The jobs to replan now and their new plans (blocking: plans): off links found down, degraded or
    vanished, and back onto links no finding holds any more where that lowers the busiest link's load
    by more than ``load_slack`` (``kept``: (job, plan_id, link) found not worth it before, not tried again)."""
    unmapped = Unmapped({})
    base = load_yaml(fabric_yaml)
    current = {frozenset((a, b)) for a, b in frames["current"].iter_rows()}
    netdevs = {(n, d): i for n, d, i in frames["netdevs"].iter_rows()} if "netdevs" in frames else {}
    triggers = fault_triggers(frames["faults"], base, unmapped, netdevs) + vanished_triggers(
        frames["vanished"], current, base, unmapped
    )
    newest = newest_plans(frames["plans"])
    if newest.is_empty():
        return Decision(base, [], unmapped.counts, [])
    topo = fabric_now(fabric_yaml, triggers, frames["plans"]) if triggers else base
    out, failed, stayed = [], [], []
    off = jobs_to_replan(triggers, newest, frames["runs"]) if triggers else []
    moving = {job for job, _, _ in off}
    back = [
        x
        for x in jobs_to_restore(triggers, newest, frames["runs"])
        if x[0] not in moving and (x[0], x[1], x[2].link) not in kept
    ]
    for job, plan_id, trigger in off + back:
        rows = newest.filter(pl.col("plan_id") == plan_id).to_dicts()
        try:
            r = replan(topo, rows, max_qps, load_slack)
        except (TopologyError, ValueError, TypeError, KeyError) as exc:  # a plan this fabric cannot carry
            failed.append((job, f"{type(exc).__name__}: {exc}"))
            continue
        if trigger.reason in LINK_REASONS or r.max_load_over_bound < r.old_max_load_over_bound * (
            1 - load_slack
        ):
            out.append((job, plan_id, trigger, r))
        else:
            stayed.append((job, plan_id, trigger.link))
    return Decision(topo, out, unmapped.counts, failed, stayed)


def notice(
    job: str, plan_id: str, previous: str, trigger: LinkTrigger, r: Replan, applied: str, now: datetime
) -> dict[str, Any]:
    """A replan as the alert sinks take a fault row (its id ``replan:<plan_id>``), with the plan's figures."""
    cause = f"fault {trigger.fault_id}" if trigger.fault_id else "fabric discovery"
    old_load = _finite(r.old_max_load_over_bound)
    before = f"{old_load:.2f}x" if old_load is not None else "a dead link (no end)"
    what = (
        f"back onto {trigger.link} ({cause} no longer holds)"
        if trigger.reason == RESTORED
        else f"after {trigger.reason} on {trigger.link} ({cause})"
    )
    summary = (
        f"C4P replanned job {job} {what}: max link load "
        f"{before} -> {r.max_load_over_bound:.2f}x the bound, {r.moved_pieces} pieces "
        f"moved, plan {plan_id} replaces {previous} ({applied or 'stored only'})"
    )
    figures = {
        "plan_id": plan_id,
        "previous_plan_id": previous,
        "reason": trigger.reason,
        "trigger_fault_id": trigger.fault_id,
        "link": trigger.link,
        "old_max_load_over_bound": old_load,  # null: the old plan crosses a dead link
        "new_max_load_over_bound": _finite(r.max_load_over_bound),
        "moved_pieces": r.moved_pieces,
        "completion_s": _finite(r.completion_s),
        "old_completion_s": _finite(r.old_completion_s),
        "applied": applied,
    }
    return {
        "ts": now,
        "node": "",
        "job": job,
        "fault_id": f"replan:{plan_id}",
        "detector": "c4p_replan",
        "fault_class": "replan",
        "component_type": "link",
        "component": trigger.link,
        "first_seen": now,
        "last_seen": now,
        "confidence": 1.0,
        "action": "apply_plan",
        "state": "open",
        "summary": summary,
        "evidence_json": json.dumps(figures),
        **figures,
    }


def _finite(x: float) -> float | None:
    """x rounded to 4 places, None when infinite (JSON has no infinity)."""
    return round(x, 4) if math.isfinite(x) else None


def _safe(name: str) -> str:
    """A job name usable as a directory name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "job"


class Replanner:
    """The collector's replan task: reads in ``pool``, commits through the writer thread."""

    def __init__(
        self, cfg: CollectorConfig, store: Store, writer: Writer, metrics: Metrics, pool: ThreadPoolExecutor
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.writer = writer
        self.metrics = metrics
        self.pool = pool
        self.notifier = alert_actions(cfg)
        self.kept: set[tuple[str, str, str]] = set()  # replans back found not worth it (this process)

    @staticmethod
    def enabled(cfg: CollectorConfig) -> bool:
        """On when a fabric topology is configured, unless replan_on_link_faults = false."""
        return bool(cfg.replan_on_link_faults and cfg.fabric_topology)

    def _decide(self) -> Decision:
        cur = self.store.cursor()
        try:
            frames = read_frames(cur, _now() - timedelta(seconds=self.cfg.diagnose_window_s))
        finally:
            cur.close()
        return decide(
            frames,
            self.cfg.fabric_topology,
            self.cfg.replan_max_qps,
            self.cfg.replan_load_slack,
            frozenset(self.kept),
        )

    def _apply(self, job: str, plan_id: str, r: Replan) -> str:
        """Write the plan's files where configured; what was done, as plan_runs.applied says it."""
        if not self.cfg.replan_apply_dir:
            return "dry_run"
        d = Path(self.cfg.replan_apply_dir) / _safe(job) / plan_id
        try:
            d.mkdir(parents=True, exist_ok=True)
            write_apply(self.cfg.replan_apply_formats, d, r.plan, plan_id, [])
        except (OSError, ApplyError) as exc:
            log.error("replan not written job=%s plan_id=%s dir=%s error=%s", job, plan_id, d, exc)
            self.metrics.inc("replan_apply_failures")
            return f"failed:{exc}"[:200]
        return ",".join(f"{f}:{d}" for f in self.cfg.replan_apply_formats)

    def _store_and_announce(self, d: Decision, now: datetime) -> tuple[dict[str, list[dict]], list[dict]]:
        """Rows of every table for the new plans, and the alert actions (blocking: files and network)."""
        tables: dict[str, list[dict]] = {"plans": [], "plan_links": [], "plan_runs": []}
        notices = []
        for job, previous, trigger, r in d.replans:
            plan_id = f"replan-{uuid.uuid4().hex[:8]}"
            applied = self._apply(job, plan_id, r)
            tables["plans"] += [x | {"ts": now} for x in plan_rows(r.plan, plan_id, r.max_load_over_bound)]
            tables["plan_links"] += [x | {"ts": now} for x in link_rows(r.plan, plan_id)]
            tables["plan_runs"].append(
                plan_run_row(
                    r.plan,
                    plan_id,
                    job,
                    trigger.reason,
                    previous_plan_id=previous,
                    previous_routes=r.previous_routes,
                    fault_id=trigger.fault_id,
                    link=trigger.link,
                    applied=applied,
                )
                | {"ts": now}
            )
            notices.append(notice(job, plan_id, previous, trigger, r, applied, now))
            log.warning(
                "replanned job=%s plan_id=%s previous=%s reason=%s link=%s fault_id=%s over_bound=%.3f->%.3f moved=%d how=%s applied=%s",
                job,
                plan_id,
                previous,
                trigger.reason,
                trigger.link,
                trigger.fault_id,
                r.old_max_load_over_bound,
                r.max_load_over_bound,
                r.moved_pieces,
                r.how,
                applied,
            )
        actions: list[dict] = []
        if self.notifier is not None and notices:
            job_of = {n["fault_id"]: n["job"] for n in notices}
            actions = [a | {"job": job_of.get(a["fault_id"], "")} for a in self.notifier.notify(notices)]
        return tables, actions

    async def run(self) -> Decision:
        """One pass: decide, plan, store, apply and announce."""
        loop = asyncio.get_running_loop()
        d = await loop.run_in_executor(self.pool, self._decide)
        for reason, n in d.unmapped.items():
            self.metrics.inc(f"replan_unmapped:{reason}", n)
        for job, why in d.failed:
            self.metrics.inc("replan_failures")
            log.error("replan failed job=%s error=%s", job, why)
        for job, plan_id, link in d.kept:
            self.kept.add((job, plan_id, link))
            self.metrics.inc("replans_back_not_worth_it")
            log.info("link back, plan kept job=%s plan_id=%s link=%s (no lower load)", job, plan_id, link)
        if not d.replans:
            return d
        tables, actions = await loop.run_in_executor(self.pool, self._store_and_announce, d, _now())
        tables["actions"] = actions
        batches = [PendingBatch.internal(self.store.catalogue[t], rows) for t, rows in tables.items() if rows]
        for batch, stored in zip(batches, await self.writer.submit_many_async(batches), strict=True):
            if stored.error:  # queued together: the plan, its links, its plan_runs row
                raise RuntimeError(
                    f"could not store {batch.table.num_rows} {batch.spec.name} rows: {stored.error}"
                )
        self.metrics.inc("replans", len(d.replans))
        return d
