"""Pacing of the rollups' computing thread: it rests between chunks, so a minute's rollups spread over
more of the minute instead of taking the CPU in one burst.

At 2,000 nodes a minute's rollups are ~15 s of CPU. Run at once, even at nice 10 (``ROLLUP_NICE``),
they filled the 5-second windows after each minute with the worst ack latencies of a run (1.9-2.6 s
ack p99 there, 0.4-1.0 s in the others, ``c4 bench load --agents 2000``): on two cores a thread at low
priority still takes its turns, its working set pushes the writer's out of the caches, and while it
holds the interpreter lock and is preempted for a thread of higher priority, every other Python thread
waits for it. Resting after each chunk for as long as the chunk took on the CPU times
(1 / duty - 1) caps its share; the rests stop once a pass has run for ``budget_s``, so rollups never
fall behind their period.

Only the thread that called ``start_pass`` is paced: tests and benchmarks calling the rollup functions
directly run them at full speed.
"""

from __future__ import annotations

import threading
import time

#: Share of the wall time the rollup thread computes while paced (it rests the rest).
DUTY = 0.5
#: A pass rests only within this many seconds of its start (then it finishes at full speed): the
#: rollup period is 60 s by default, and the hour's rollup shares the pass with the minute's.
BUDGET_S = 30.0

_paced = threading.local()


def start_pass(duty: float = DUTY, budget_s: float = BUDGET_S, started: float | None = None) -> None:
    """Pace this thread from now on, for a pass that started at ``started`` (time.monotonic(); default now)."""
    _paced.duty = duty
    _paced.until = (time.monotonic() if started is None else started) + budget_s
    _paced.cpu_s = time.thread_time()


def end_pass() -> None:
    """Stop pacing this thread."""
    _paced.duty = None


def rest() -> float:
    """After a chunk: sleep for the CPU time this thread used since the last rest times (1 / duty - 1),
    when it is paced and its pass is within its budget; returns the seconds slept."""
    duty = getattr(_paced, "duty", None)
    if duty is None:
        return 0.0
    cpu_s = time.thread_time()
    used_s, _paced.cpu_s = cpu_s - _paced.cpu_s, cpu_s
    now = time.monotonic()
    if duty >= 1.0 or now >= _paced.until:
        return 0.0
    sleep_s = min(used_s * (1.0 / duty - 1.0), _paced.until - now)
    if sleep_s > 0:
        time.sleep(sleep_s)
        _paced.cpu_s = time.thread_time()
    return max(0.0, sleep_s)
