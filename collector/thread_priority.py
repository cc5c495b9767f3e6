"""Lower the CPU priority of the calling OS thread (Linux keeps a nice value per thread)."""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("c4.collector.thread_priority")


def lower_thread_priority(nice: int) -> bool:
    """Give the calling OS thread a CPU priority ``nice`` steps below its own (at most 19); False where
    that cannot be done (not Linux, or refused), which changes nothing else."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError) as exc:
        log.debug("thread priority not lowered error=%s", exc)
        return False
    return True
