"""How often the collector asks its agents to flush, from how long its own commits take.

An agent samples every second and flushes what it sampled every ``flush_interval_s``. Each flush
costs the collector a fixed amount per table batch whatever its rows (Arrow framing, DuckDB's
statement and log costs), so a collector that falls behind can take the same rows at a fraction of
the cost if its agents flush every few seconds instead. The advisor watches the time from receiving
a bundle to committing it: once more than a tenth of the bundles of two windows in a row take
longer than ``raise_at_s``, it advises the longest interval at once (a backlog grows every second
it waits); once a quarter or fewer of the bundles of the last ``hold_s`` have taken longer than
``lower_at_s`` (a checkpoint's few slow seconds do not reset that count), the next shorter one; and
if that proves too short (raised again soon after) it waits twice as long before the next try.
Agents flush at the longer of their own interval and the advice; samples keep their one-second
resolution. ``lag_s`` tells the diagnosis how far behind the clock the data may be.

Latency tells of a backlog only once it is there. Where the advisor can see how busy the writer is
(``busy_s``: its seconds spent committing so far), a window in which commits took more than
``busy_share_max`` of the time raises the advice as slow windows do, before acks are late: 2,000
agents connecting over 10 s at a 1 s flush made up to 10,000 batches a second, which kept the writer
busy all the time 6 s in, while the latency rule raised the advice 3 s later, when acks already
took 1.5 s and the ramp's backlog was the p99 of the next 10 s. A busy window also ends the calm a
step down waits for (a step down that would only make the writer busy again is not taken).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

log = logging.getLogger("c4.collector.flush_advice")

#: The intervals advised, shortest first (1 s: no advice beyond the agents' own default).
DEFAULT_STEPS_S = (1.0, 2.0, 5.0)
#: The longest calm a step down waits for, seconds (after steps down that had to be taken back).
MAX_LOWER_HOLD_S = 600.0
#: Share of a window the writer may spend committing before the advice goes up (``busy_s``).
BUSY_SHARE_MAX = 0.7


def steps_up_to(max_s: float, steps_s: Sequence[float] = DEFAULT_STEPS_S) -> tuple[float, ...]:
    """The steps not above ``max_s``, and ``max_s`` itself as the last (1 s when ``max_s`` is below it)."""
    kept = [s for s in steps_s if s < max_s]
    return tuple(kept + [max(max_s, 1.0)]) if kept or max_s >= 1.0 else (1.0,)


class FlushAdvisor:
    """The flush interval to advise agents, stepped up under a commit backlog and down once it is gone."""

    def __init__(
        self,
        max_s: float = 5.0,
        raise_at_s: float = 0.5,
        lower_at_s: float = 0.25,
        window_s: float = 1.0,
        hold_s: float = 30.0,
        slow_share: float = 0.1,
        calm_share: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        busy_s: Callable[[], float] | None = None,
        busy_share_max: float = BUSY_SHARE_MAX,
    ) -> None:
        self.steps_s = steps_up_to(max_s)
        #: the writer's seconds spent committing so far (None: not known here, latency alone decides)
        self._busy_s = busy_s
        self.busy_share_max = busy_share_max
        self._busy_mark = busy_s() if busy_s is not None else 0.0  # its reading when the window started
        self._period_busy = False  # a busy window since the period judged for a step down started
        self.raised_busy = 0  # raises a busy writer made (before latency did)
        self.raise_at_s = raise_at_s
        self.lower_at_s = lower_at_s
        self.window_s = window_s
        self.hold_s = hold_s
        self.slow_share = slow_share
        self.calm_share = calm_share
        self._clock = clock
        self._lock = threading.Lock()
        self._step = 0
        now = clock()
        self._window_start = now
        self._seen = self._over_raise = self._over_lower = 0
        self._slow_windows = 0  # slow windows in a row
        # bundles since the start of the period judged for a step down, and those over lower_at_s
        self._period_start = now
        self._period_seen = self._period_over_lower = 0
        self._hold_until = now  # no other step before (agents follow an advice within one flush)
        #: (since, advice in force): the last few changes, for ``lag_s``
        self._history: deque[tuple[float, float]] = deque([(now, self.steps_s[0])], maxlen=16)
        self.raised = self.lowered = 0
        self._lower_hold_s = hold_s  # calm this long before a step down (doubles when one fails)
        self._lowered_at: float | None = None

    @property
    def enabled(self) -> bool:
        """Whether there is anything to advise beyond 1 s."""
        return len(self.steps_s) > 1

    def advice_s(self) -> float:
        """The interval to advise now, seconds; 0.0 at the first step (no advice: agents flush at their
        own interval, which may be shorter than a second)."""
        return self.steps_s[self._step] if self._step else 0.0

    def observe(self, latency_s: float) -> None:
        """One bundle committed (or refused) ``latency_s`` after it was received."""
        with self._lock:
            self._seen += 1
            if latency_s > self.lower_at_s:
                self._over_lower += 1
                if latency_s > self.raise_at_s:
                    self._over_raise += 1
            now = self._clock()
            if now - self._window_start >= self.window_s:
                self._close_window(now)

    def _window_busy(self, now: float) -> bool:
        """Whether the writer spent more than ``busy_share_max`` of the window now ending committing."""
        if self._busy_s is None:
            return False
        busy_s, elapsed_s = self._busy_s(), now - self._window_start
        share = (busy_s - self._busy_mark) / elapsed_s if elapsed_s > 0 else 0.0
        self._busy_mark = busy_s
        return share > self.busy_share_max

    def _close_window(self, now: float) -> None:
        slow = self._over_raise > self.slow_share * self._seen
        busy = self._window_busy(now)
        self._period_busy = self._period_busy or busy
        self._period_seen += self._seen
        self._period_over_lower += self._over_lower
        self._window_start = now
        self._seen = self._over_raise = self._over_lower = 0
        self._slow_windows = self._slow_windows + 1 if slow else 0
        if now < self._hold_until:
            self._new_period(now)  # what the agents sent before they followed the last change
            return
        if (self._slow_windows >= 2 or busy) and self._step + 1 < len(self.steps_s):
            if self._lowered_at is not None and now - self._lowered_at < 2 * self._lower_hold_s:
                self._lower_hold_s = min(MAX_LOWER_HOLD_S, 2 * self._lower_hold_s)  # that step was too short
            self._set(len(self.steps_s) - 1, now, "acks late" if self._slow_windows >= 2 else "writer busy")
            self.raised += 1
            self.raised_busy += self._slow_windows < 2
        elif now - self._period_start >= self._lower_hold_s:
            calm = self._period_over_lower <= self.calm_share * self._period_seen and not self._period_busy
            if calm and self._step > 0:
                self._set(self._step - 1, now, "calm")
                self._lowered_at = now
                self.lowered += 1
            self._new_period(now)

    def _new_period(self, now: float) -> None:
        self._period_start = now
        self._period_seen = self._period_over_lower = 0
        self._period_busy = False

    def _set(self, step: int, now: float, why: str) -> None:
        old = self.steps_s[self._step]
        self._step = step
        log.info("agents' flush advice from=%gs to=%gs why=%s", old, self.steps_s[step], why)
        # agents take the new advice with their next ack and act on it at their next flush: wait until
        # every agent flushed under it, and a window more, before judging it
        self._hold_until = now + max(old, self.steps_s[step]) + self.window_s
        self._history.append((now, self.steps_s[step]))

    def lag_s(self) -> float:
        """How far behind the clock an agent's newest data may still be: the longest advice in force
        within the last two longest intervals (agents on an older, longer advice flush once more)."""
        with self._lock:
            now = self._clock()
            horizon = now - 2 * self.steps_s[-1]
            longest = self.steps_s[self._step]
            for i, (_since, advice) in enumerate(self._history):
                until = self._history[i + 1][0] if i + 1 < len(self._history) else now
                if until >= horizon:
                    longest = max(longest, advice)
            return longest if longest > 1.0 else 0.0
