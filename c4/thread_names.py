"""C4's threads under their own names in the OS (``top -H``, ``ps -L``, /proc/PID/task/*/comm)."""

from __future__ import annotations

import ctypes
import sys

#: prctl option that sets the calling thread's name (linux/prctl.h); the kernel keeps 15 bytes of it.
PR_SET_NAME = 15
NAME_BYTES = 15


def name_os_thread(name: str) -> bool:
    """Give the calling thread ``name`` (cut to 15 bytes) in the OS; False, changing nothing, off Linux.

    Python names its threads only for itself; the OS shows every one as ``python``. With names, an
    operator (and ``c4 bench agent`` / ``c4 bench load``) sees which of the agent's samplers or its sender,
    or which of the collector's writer, checkpointer or rollups, spends the CPU. Threads a named thread
    starts (gRPC's, for one) inherit its name."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    raw = name.encode("utf-8", "replace")[:NAME_BYTES]
    return prctl(PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0) == 0
