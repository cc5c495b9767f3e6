"""A child process that ends when the process that started it dies, however it dies (Linux
``PR_SET_PDEATHSIG``; elsewhere nothing): a killed collector, ``c4 sim``, demo or benchmark leaves no
child behind. The signal follows the *thread* that started the child: start children from a thread
that lives as long as they should."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

#: prctl(2)'s option: the signal the calling process gets when the thread that started it ends
PR_SET_PDEATHSIG = 1


def prctl_function() -> Callable[..., int] | None:
    """libc's ``prctl`` (None where there is none: not Linux). Look it up before a fork when the child
    runs it as a ``preexec_fn``, so the child does as little as it can between fork and exec."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def arm(prctl: Callable[..., int] | None, parent_pid: int, signum: int) -> bool:
    """In the child: get ``signum`` when the parent dies, and at once when ``parent_pid`` is already gone
    (it died before the prctl took effect). False where ``prctl`` is None or refuses: the child then
    outlives a killed parent."""
    armed = prctl is not None and prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)
    return armed
