"""The single writer thread: groups queued batches into one transaction, then resolves their futures."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from c4.collector.batch_checks import Suspects, commit_checked
from c4.collector.store import CommitResult, PendingBatch, Store
from c4.thread_names import name_os_thread

log = logging.getLogger("c4.collector.writer")

#: How long an idle writer waits before it moves the store's side-file rows in (see Store.settle).
IDLE_S = 0.05
#: An idle writer with nothing pending still looks this often (a store DuckDB invalidated meanwhile is
#: opened again by ``Store.settle``, so that reads work again with no commit coming).
IDLE_LOOK_S = 1.0
#: After a failed move (e.g. a full disk) the idle writer tries again this much later (a commit tries at once).
SETTLE_RETRY_S = 1.0


class Writer:
    """Owns all writes to the store. Other threads and the event loop submit work to it."""

    def __init__(
        self,
        store: Store,
        max_group: int = 256,
        linger_s: float = 0.005,
        target_rows: int = 256_000,
        spacing_s: float = 0.0,
        spacing_factor: float = 3.0,
    ) -> None:
        self.store = store
        self.max_group = max_group
        self.linger_s = linger_s
        self.target_rows = target_rows
        #: a commit starts at least ``spacing_factor`` times as long as the one before took after that one
        #: started, and at most ``spacing_s`` (0: no spacing). Each commit costs ~20 ms of fixed work
        #: whatever its rows, so a writer committing back to back spends less per row in fewer, larger groups
        #: gathered meanwhile (2,000 agents: 14 commits/s -> 5, the collector's CPU 15% lower); a writer with
        #: little to do commits quickly (a 5 ms commit: 15 ms later), one that was idle at once
        self.spacing_s = spacing_s
        self.spacing_factor = spacing_factor
        self._last_commit_took_s = 0.0
        self._last_commit_start = float("-inf")  # time.monotonic()
        self._q: queue.Queue[tuple[Any, Callable[[Any], None]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="c4-writer", daemon=True)
        self.commits = 0
        #: seconds spent committing and running jobs so far (time.perf_counter): how busy the writer is
        self.busy_s = 0.0
        #: of those, seconds spent in group commits only: the share agents' flushes cost, which the flush
        #: advice can lower (FlushAdvisor's busy_s); maintenance jobs and side-file moves are not in it
        self.commit_busy_s = 0.0
        #: agents refused lately, whose batches are checked apart from the others' (see batch_checks)
        self.suspects = Suspects()
        self._settle_after = 0.0  # time.monotonic() before which an idle writer does not try to move
        self._thread.start()

    def submit_async(self, batch: PendingBatch) -> asyncio.Future[CommitResult]:
        """Queue a batch from the event loop; await the returned future for its result."""
        return self._queue_async([batch], lambda results: results[0])

    def submit_many_async(self, batches: list[PendingBatch]) -> asyncio.Future[list[CommitResult]]:
        """Queue batches from the event loop (one wake-up for all); the future gets their results."""
        return self._queue_async(batches)

    def call_async(self, fn: Callable[[Store], Any]) -> asyncio.Future[Any]:
        """Run ``fn(store)`` on the writer thread (retention, checkpoints) and await its result."""
        return self._queue_async(fn)

    def _queue_async(self, work: Any, pick: Callable[[Any], Any] = lambda result: result) -> asyncio.Future:
        """Queue work from the event loop; the future resolves, on the loop, with ``pick(result)``."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()

        def done(result: Any) -> None:
            loop.call_soon_threadsafe(_set_if_pending, fut, pick(result))

        self._q.put((work, done))
        return fut

    def _diverting(self) -> bool:
        """The store's file is checkpointing: commits go to its side file, maintenance jobs wait."""
        return bool(getattr(self.store, "diverting", False))

    def _run_job(self, work: Callable[[Store], Any], done: Callable[[Any], None]) -> None:
        started = time.perf_counter()
        try:
            result = work(self.store)
        except BaseException as exc:  # a maintenance job must not kill the writer (nor a panic)
            log.exception("writer job failed error=%s", exc)
            result = exc
        self.busy_s += time.perf_counter() - started
        done(result)

    def _run_jobs(self, jobs: list[tuple[Any, Callable[[Any], None]]]) -> None:
        """Run maintenance jobs in the order they came."""
        for job, job_done in jobs:
            self._run_job(job, job_done)

    def _settle(self) -> None:
        """Idle, or waiting out the spacing: let the store move rows it took aside during a checkpoint."""
        settle = getattr(self.store, "settle", None)
        if settle is None or time.monotonic() < self._settle_after:
            return
        started = time.perf_counter()
        try:
            settle()
        except Exception as exc:  # the rows stay in the side file; the next commit tries again
            self._settle_after = time.monotonic() + SETTLE_RETRY_S
            log.warning("moving the side file's rows failed error=%s", exc)
        self.busy_s += time.perf_counter() - started

    def _spacing(self) -> float:
        """Seconds from the last commit's start before the next may start."""
        return min(self.spacing_s, self.spacing_factor * self._last_commit_took_s)

    def _run(self) -> None:
        name_os_thread("c4-writer")
        # maintenance jobs (retention, rollups) write the store's own tables, which wait while the
        # file checkpoints: they are held until it is over, so that acks do not wait behind them
        held: list[tuple[Any, Callable[[Any], None]]] = []
        while True:
            if held and not self._diverting():
                self._run_jobs(held)
                held = []
            waiting = (
                bool(held)
                or bool(getattr(self.store, "side_pending", False))
                or bool(getattr(self.store, "invalidated", ""))  # settle() opens it again
            )
            try:
                item = self._q.get(timeout=IDLE_S if waiting else IDLE_LOOK_S)
            except queue.Empty:
                self._settle()
                continue
            if item is None:
                self._run_jobs(held)
                return
            work, done = item
            if callable(work):
                if self._diverting():
                    held.append((work, done))
                else:
                    self._run_job(work, done)
                continue
            group = [(work, done)]
            batches = len(work)
            rows = sum(b.num_rows for b in work)
            stop = False
            # linger a few ms for more batches: DuckDB appends one large Arrow table far faster
            # (in parallel) than many small ones, at a latency cost no agent notices
            deadline = max(time.monotonic() + self.linger_s, self._last_commit_start + self._spacing())
            if deadline - time.monotonic() > self.linger_s and getattr(self.store, "side_pending", False):
                # the side file's rows move in before this commit either way (Store._into_side): move them
                # now, while the group gathers for the spacing, rather than after it
                self._settle()
            while batches < self.max_group:
                try:
                    if rows >= self.target_rows:
                        nxt = self._q.get_nowait()
                    else:
                        nxt = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if callable(nxt[0]):
                    # keep order loosely: it runs after this group, with the jobs held (at the loop's top,
                    # once no checkpoint diverts commits). Not put back in the queue: the next group met
                    # it again and was cut short too, and a job held back by a checkpoint (a rollup's,
                    # say) made every commit of the checkpoint's seconds a short one
                    held.append(nxt)
                    continue
                group.append(nxt)
                batches += len(nxt[0])
                rows += sum(b.num_rows for b in nxt[0])
            flat = [b for item, _ in group for b in item]
            self._last_commit_start = time.monotonic()
            started = time.perf_counter()
            try:
                results = commit_checked(self.store, flat, self.suspects)
            except BaseException as exc:  # the writer owns exactly-once: it must outlive any error
                log.exception("commit failed batches=%d error=%s", len(flat), exc)
                self.store.mark_failed(flat)
                results = [CommitResult(error=f"commit failed: {exc}")] * len(flat)
            self.commits += 1
            self._last_commit_took_s = time.perf_counter() - started
            self.busy_s += self._last_commit_took_s
            self.commit_busy_s += self._last_commit_took_s
            start = 0
            for item, cb in group:
                cb(results[start : start + len(item)])
                start += len(item)
            # free the group's Arrow tables here, not on the event loop (see IngestService.PushBundle)
            work = item = group = flat = nxt = None
            if stop:
                self._run_jobs(held)
                return

    def close(self) -> None:
        """Finish queued work and stop the thread."""
        self._q.put(None)
        self._thread.join()


def _set_if_pending(fut: asyncio.Future, result: Any) -> None:
    if not fut.done():
        fut.set_result(result)
