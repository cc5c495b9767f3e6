"""An in-process agent wired to real samplers, and spool readers."""

from __future__ import annotations

from pathlib import Path

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
