"""A daemon thread of its own for a sampler whose source blocked (a hung driver, a dead NFS mount): it stops only itself."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from c4.thread_names import name_os_thread

log = logging.getLogger("c4.agent.worker")


class SamplerWorker:
    """Runs one sampler's ticks on its own daemon thread, one at a time, so the scheduler never waits on it.

    A tick that never returns keeps this thread only; being a daemon, it does not keep the process
    from exiting either.
    """

    def __init__(self, name: str, busy_since: float | None = None) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        # time.monotonic() when the running tick started; given when the worker takes over a sampler whose
        # tick still runs on another thread (the scheduler's), until that thread calls ``tick_returned``
        self._busy_since: float | None = busy_since
        self._thread = threading.Thread(target=self._run, name=f"c4-sampler-{name}", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue a tick; False (and nothing queued) while the previous one is still running."""
        if self._busy_since is not None:
            return False
        self._busy_since = time.monotonic()
        self._jobs.put(job)
        return True

    def tick_returned(self) -> None:
        """The tick that was running elsewhere when this worker took the sampler over has returned."""
        self._busy_since = None

    def busy_for_s(self) -> float:
        """Seconds the current tick has been running (0.0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no tick is running, at most ``timeout_s``; True when idle."""
        deadline = time.monotonic() + timeout_s
        while self._busy_since is not None and time.monotonic() < deadline:
            time.sleep(0.005)
        return self._busy_since is None

    def stop(self) -> None:
        """Let the thread end after its current tick (without waiting for it)."""
        self._jobs.put(None)

    def _run(self) -> None:
        name_os_thread(f"c4-{self.name}")
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # a tick handles its own errors; this is the last line of defence
                log.exception("sampler tick failed outside its error handling sampler=%s", self.name)
            finally:
                self._busy_since = None
