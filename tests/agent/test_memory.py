"""The agent process on the OS side: what start-up freed goes back (glibc malloc_trim), threads carry names."""

from __future__ import annotations

import subprocess
import sys

CODE = """
from c4.agent.memory import trim_heap

def rss_kib():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])

# start-up's kind of garbage: many blocks freed between a few that stay, so the heap cannot shrink by itself
blocks = [bytes(2000) + bytes([i % 256]) for i in range(30000)]
kept = blocks[::10]
del blocks
before = rss_kib()
print(trim_heap(), before - rss_kib())
"""


def test_trim_heap_returns_freed_memory():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60, check=True)
    ok, freed_kib = out.stdout.split()
    assert ok == "True", out.stdout + out.stderr
    assert int(freed_kib) > 20_000, out.stdout  # ~53 MiB lie freed between kept blocks: most goes back


def test_agent_threads_carry_their_names_in_the_os():
    """A thread named through name_os_thread shows under that name in /proc (cut to 15 bytes)."""
    import threading
    from pathlib import Path

    from c4.thread_names import name_os_thread

    seen = {}

    def run():
        seen["ok"] = name_os_thread("c4-nccl_inspector")
        seen["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == {"ok": True, "comm": "c4-nccl_inspect"}
