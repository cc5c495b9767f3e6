"""The collector's periodic jobs (retention, metrics snapshot, diagnosis): never dying silently.

Each job runs in a loop that survives any exception the job raises, including those deriving from
BaseException rather than Exception (polars' ``PanicException`` from a Rust panic): it is logged
with its traceback, counted, and the job runs again after a backoff that doubles with each
consecutive failure (up to ``BACKOFF_MAX_S`` or the period, whichever is longer). The health of
each job is kept in a ``TaskHealth`` that the collector snapshots into ``collector_tasks`` and
``collector_metrics`` and the exporter publishes on ``/metrics``.

The lake-wide jobs (``LeaderTasks``: diagnosis, replans, retention, rollups, fabric discovery, the
lake's file upkeep) run on one collector of a lake at a time, the holder of the lease
(``c4.collector.lease``): they start when it takes the lease and stop when it loses it (a run in
progress finishes); on the other collectors their health says ``standby``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime

log = logging.getLogger("c4.collector.tasks")

#: The longest wait between attempts of a failing job (unless its period is longer).
BACKOFF_MAX_S = 120.0
#: Error messages kept per job are cut to this many characters.
ERROR_MAX_CHARS = 500


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class TaskHealth:
    """One periodic job's health: runs, failures, when it last worked and why it last failed."""

    name: str
    period_s: float
    runs: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_success: datetime | None = None
    last_error: str = ""
    last_error_at: datetime | None = None
    standby: bool = False  # a lake-wide job that another collector of the lake runs now
    #: None: the next run a period after the last one ended. Else runs start at the clock's multiples of the
    #: period plus these seconds (the rollups: each pass right after the minute it rolls, every minute)
    aligned_offset_s: float | None = None

    @property
    def state(self) -> str:
        """``standby`` (another collector of the lake runs it), ``ok``, ``failing`` (its last run failed)
        or ``starting`` (not run yet)."""
        if self.standby:
            return "standby"
        if self.consecutive_failures:
            return "failing"
        return "ok" if self.runs else "starting"

    def delay_s(self, now_s: float | None = None) -> float:
        """Seconds until the next run: the period (or, when aligned, until the next multiple of it on the
        clock, ``now_s`` seconds since the epoch, plus the offset), doubled per consecutive failure (bounded)."""
        if not self.consecutive_failures:
            if self.aligned_offset_s is None:
                return self.period_s
            return until_aligned_s(
                time.time() if now_s is None else now_s, self.period_s, self.aligned_offset_s
            )
        backoff = self.period_s * 2 ** min(self.consecutive_failures, 16)
        return min(backoff, max(self.period_s, BACKOFF_MAX_S))

    def succeeded(self, at: datetime) -> None:
        """Record a run that completed."""
        self.runs += 1
        self.consecutive_failures = 0
        self.last_success = at

    def failed(self, exc: BaseException, at: datetime) -> None:
        """Record a run that raised ``exc``."""
        self.runs += 1
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS]
        self.last_error_at = at

    def row(self, ts: datetime, node: str) -> dict:
        """This health as a ``collector_tasks`` row."""
        return {
            "ts": ts,
            "node": node,
            "job": "",
            "task": self.name,
            "state": self.state,
            "period_s": self.period_s,
            "runs": self.runs,
            "failures": self.failures,
            "consecutive_failures": self.consecutive_failures,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }


def until_aligned_s(now_s: float, period_s: float, offset_s: float) -> float:
    """Seconds from ``now_s`` to the next instant ``k * period_s + offset_s`` after it (a whole period when
    ``now_s`` is one)."""
    return period_s - (now_s - offset_s) % period_s


async def run_every(
    health: TaskHealth,
    fn: Callable[[], Awaitable[object]],
    count: Callable[[str], None],
    failed: Callable[[BaseException], None] | None = None,
) -> None:
    """Run ``fn`` every period until cancelled; a failure is logged, counted, told to ``failed`` (the store
    replaces a DuckDB instance that failed internally) and retried with backoff.

    ``count(key)`` increments a collector counter (``task_runs:<name>``, ``task_failures:<name>``).
    """
    while True:
        await asyncio.sleep(health.delay_s())
        try:
            await fn()
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - PanicException derives from BaseException
            health.failed(exc, _now())
            count(f"task_failures:{health.name}")
            if failed is not None:
                failed(exc)
            log.error(
                "periodic task failed task=%s consecutive_failures=%d retry_in_s=%.1f error=%s",
                health.name,
                health.consecutive_failures,
                health.delay_s(),
                health.last_error,
                exc_info=exc,
            )
        else:
            failing = health.consecutive_failures
            health.succeeded(_now())
            if failing:
                log.info("periodic task recovered task=%s after_failures=%d", health.name, failing)
        count(f"task_runs:{health.name}")


class LeaderTasks:
    """The periodic jobs only the lake's leader runs: started by ``follow(True)`` when this collector
    takes the lease, stopped by ``follow(False)`` when it loses it (a collector alone on its store
    always leads). Their health lives in the collector's task table, ``standby`` while not running.

    Stopping never cuts a run short: a diagnosis pass that sent an alert still stores its actions row
    (without it the next leader would alert again); no run starts after the stop. Only ``stop(finish=False)``
    (the collector shutting down) cancels the runs in progress too.
    """

    def __init__(
        self,
        health: MutableMapping[str, TaskHealth],
        count: Callable[[str], None],
        failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._health = health
        self._count = count
        self._failed = failed  # told each run's failure (run_every)
        self._jobs: list[tuple[TaskHealth, Callable[[], Awaitable[object]]]] = []
        self._running: list[asyncio.Task] = []
        self._in_flight: set[asyncio.Future] = set()  # runs shielded from the loops' cancellation

    def add(
        self,
        name: str,
        period_s: float,
        fn: Callable[[], Awaitable[object]],
        aligned_offset_s: float | None = None,
    ) -> None:
        """Declare a leader-only job (not started: ``follow`` starts it); ``aligned_offset_s``: its runs start
        at the clock's multiples of the period plus that (``TaskHealth.aligned_offset_s``)."""
        health = self._health.setdefault(name, TaskHealth(name, period_s))
        health.aligned_offset_s = aligned_offset_s
        health.standby = True
        self._jobs.append((health, fn))

    @property
    def names(self) -> list[str]:
        """The declared jobs' names."""
        return [h.name for h, _ in self._jobs]

    @property
    def running(self) -> bool:
        """Whether the jobs run on this collector now."""
        return bool(self._running)

    def _whole(self, fn: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[object]]:
        """``fn`` as a run that a cancelled loop leaves to finish (its outcome is logged if nobody awaits it)."""

        async def run() -> object:
            inner = asyncio.ensure_future(fn())
            self._in_flight.add(inner)
            inner.add_done_callback(self._finished)
            return await asyncio.shield(inner)

        return run

    def _finished(self, run: asyncio.Future) -> None:
        self._in_flight.discard(run)
        if not run.cancelled() and run.exception() is not None:  # retrieved: no "never retrieved" noise
            log.debug("leader task run ended with an error error=%s", run.exception())

    def follow(self, leading: bool) -> bool:
        """Start the jobs when ``leading`` and not running, stop them when not; whether that changed anything."""
        if leading and not self._running and self._jobs:
            for health, fn in self._jobs:
                health.standby = False
                self._running.append(
                    asyncio.create_task(run_every(health, self._whole(fn), self._count, self._failed))
                )
            log.info("leader tasks started tasks=%s", ",".join(self.names))
            return True
        if not leading and self._running:
            self.stop()
            log.info("leader tasks stopped tasks=%s (runs in progress finish)", ",".join(self.names))
            return True
        return False

    def stop(self, finish: bool = True) -> None:
        """No more runs; with ``finish`` False the runs in progress are cancelled as well."""
        for task in self._running:
            task.cancel()
        self._running = []
        for health, _ in self._jobs:
            health.standby = True
        if not finish:
            for run in list(self._in_flight):
                run.cancel()
