"""An in-process agent wired to real samplers, a small tmpfs that a test fills, and spool readers."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from c4.agent.heartbeat import HeartbeatSampler
from c4.agent.registry import SamplerContext
from c4.agent.runner import Agent, ScheduledSampler
from c4.agent.sampler import StartupPolicy
from c4.agent.spool import Spool
from c4.arrow_ipc import decode_ipc
from c4.config import AgentConfig

#: Intervals that make an in-process agent tick, flush and report health many times a second.
FAST = {
    "interval_s": 0.01,
    "flush_interval_s": 0.05,
    "health_interval_s": 0.1,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.3,
}


@contextlib.contextmanager
def small_tmpfs(path: Path, size_bytes: int, options: str = "") -> Iterator[Path]:
    """Mount a tmpfs of ``size_bytes`` at ``path`` for the block; skips the test when mounting is impossible."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_bytes}" + (f",{options}" if options else "")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "c4-test-tmpfs", str(path)], capture_output=True, text=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(directory: Path) -> Path:
    """Write a filler file into ``directory`` until its file system reports ENOSPC; returns the filler."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (1 << 16, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


def heartbeat_agent(
    tmp_path: Path, spool_dir: Path, collector: str = "127.0.0.1:1", extra: list[ScheduledSampler] = (), **cfg
) -> tuple[Agent, HeartbeatSampler]:
    """A real Agent with a real heartbeat sampler (ticking every 10 ms) and FAST intervals."""
    hb = HeartbeatSampler("rig")
    config = AgentConfig(
        node="rig", job="", spool_dir=spool_dir, collector=collector, samplers={}, **{**FAST, **cfg}
    )
    samplers = [ScheduledSampler(hb, FAST["interval_s"], StartupPolicy.IGNORE), *extra]
    return Agent(config, samplers, SamplerContext("rig", "", {}), spool_fsync=False), hb


def spooled(directory: Path) -> dict[str, list[dict]]:
    """Every batch a fresh Spool recovers from ``directory``, decoded: table -> rows in sequence order."""
    spool = Spool(directory, 1 << 30)
    out: dict[str, list[dict]] = {}
    try:
        for seq in spool.pending():
            batch = spool.read(seq)
            assert batch is not None, f"spooled batch seq={seq} could not be read back"
            out.setdefault(batch.table, []).extend(decode_ipc(batch.payload).to_pylist())
    finally:
        spool.close()
    return out
