"""The collector's periodic store jobs beside diagnosis: retention, and the snapshot of its own
counters and periodic tasks' health into ``collector_metrics`` and ``collector_tasks``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta

from c4.catalogue import Catalogue
from c4.collector import rollup
from c4.collector.ingest import Metrics
from c4.collector.lake_upkeep import UpkeepResult
from c4.collector.store import PendingBatch
from c4.collector.tasks import TaskHealth
from c4.collector.writer import Writer
from c4.config import CollectorConfig

log = logging.getLogger("c4.collector")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _sql_timestamp(dt: datetime) -> str:
    return f"TIMESTAMP '{dt.isoformat(sep=' ')}'"


async def retain(cfg: CollectorConfig, writer: Writer, metrics: Metrics) -> dict[str, int]:
    """Drop rows older than the retention age, and rows dated beyond the allowed clock skew; rollup rows
    older than their resolution's retention.

    Returns the rows deleted per table (both kinds together).
    """
    now = _now()
    cutoff = _sql_timestamp(now - timedelta(seconds=cfg.retention_s))
    # a row further ahead than the skew never counts as "now" (ingest clamps such rows; an older
    # version stored them as sent, up to int64 max, which would otherwise never age out)
    ahead = _sql_timestamp(now + timedelta(seconds=cfg.max_clock_skew_s))
    result = await writer.call_async(
        lambda store: (store.delete_older_than(cutoff), store.delete_newer_than(ahead))
    )
    if isinstance(result, BaseException):  # the writer hands a job's exception back
        raise result
    deleted, future = result
    keep_s = {"1m": cfg.rollup_minute_retention_s, "1h": cfg.rollup_hour_retention_s}
    rolled = await writer.call_async(lambda store: rollup.retain_rollups(store, now, keep_s))
    if isinstance(rolled, BaseException):
        raise rolled
    deleted.update(rolled)
    if deleted:
        log.info("retention deleted %s", " ".join(f"{t}={n}" for t, n in deleted.items()))
        metrics.inc("retention_rows_deleted", sum(deleted.values()))
    if future:
        log.warning(
            "retention deleted rows dated ahead of the collector's clock by more than "
            "max_clock_skew_s=%g: %s",
            cfg.max_clock_skew_s,
            " ".join(f"{t}={n}" for t, n in future.items()),
        )
        metrics.inc("retention_future_rows_deleted", sum(future.values()))
    return {t: deleted.get(t, 0) + future.get(t, 0) for t in {**deleted, **future}}


async def prune_sequences(writer: Writer) -> int:
    """A lake shard's superseded sequence bookkeeping rows, deleted on the writer thread; rows deleted."""
    pruned = await writer.call_async(lambda store: store.prune_seqs())
    if isinstance(pruned, BaseException):  # the writer hands a job's exception back
        raise pruned
    if pruned:
        log.info("sequence rows pruned rows=%d", pruned)
    return pruned


async def lake_upkeep(cfg: CollectorConfig, store, metrics: Metrics, pool: Executor) -> UpkeepResult:
    """One pass of the lake's file upkeep in ``pool`` (beside ingest), counted and logged; raises after that when
    a step failed (a task failure naming the steps)."""
    result = await asyncio.get_running_loop().run_in_executor(
        pool,
        store.upkeep,
        cfg.lake_snapshot_keep_s,
        cfg.lake_file_keep_s,
        cfg.lake_upkeep_timeout_s,
    )
    metrics.add(result.counters())
    log.info(
        "lake upkeep files=%d->%d snapshots=%d->%d inlined_rows_flushed=%d files_merged=%d files_deleted=%d "
        "orphans_found=%d conflicts=%s errors=%d seconds=%.1f steps=%s",
        result.files_before,
        result.files_after,
        result.snapshots_before,
        result.snapshots_after,
        result.inlined_rows_flushed,
        result.files_merged,
        result.files_deleted,
        result.orphans_found,
        ",".join(result.conflicts) or "-",
        len(result.errors),
        result.seconds,
        ",".join(f"{name}:{s:.1f}" for name, s in result.step_s.items()) or "-",
    )
    if result.errors:  # the other steps ran and are counted above; the pass still counts as failed
        raise RuntimeError(f"lake upkeep: {len(result.errors)} step(s) failed: {'; '.join(result.errors)}")
    return result


def metric_values(metrics: Metrics, tasks: Mapping[str, TaskHealth]) -> dict[str, int]:
    """The counters, with each periodic task's health gauges beside its task_runs/task_failures counters."""
    values = dict(metrics.snapshot())
    for name, health in tasks.items():
        values[f"task_consecutive_failures:{name}"] = health.consecutive_failures
        last = health.last_success
        values[f"task_last_success_unix_s:{name}"] = int(last.replace(tzinfo=UTC).timestamp()) if last else 0
    return values


async def snapshot_metrics(
    catalogue: Catalogue, writer: Writer, metrics: Metrics, tasks: Mapping[str, TaskHealth], node: str
) -> None:
    """Write the counters into collector_metrics and the periodic tasks' health into collector_tasks."""
    ts = _now()
    rows = [
        {"ts": ts, "node": node, "job": "", "metric": k, "value": v}
        for k, v in sorted(metric_values(metrics, tasks).items())
    ]
    batches = [PendingBatch.internal(catalogue["collector_metrics"], rows)] if rows else []
    if tasks:
        health = [h.row(ts, node) for h in tasks.values()]
        batches.append(PendingBatch.internal(catalogue["collector_tasks"], health))
    for result in await writer.submit_many_async(batches) if batches else []:
        if result.error:
            raise RuntimeError(f"could not store the collector's metrics: {result.error}")
