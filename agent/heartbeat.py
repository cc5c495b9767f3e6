"""Heartbeat: one row per tick with a gap-free counter, for liveness and end-to-end loss checks."""

from __future__ import annotations

import time

from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows
from c4.options import Options as SectionOptions


class HeartbeatSampler:
    """Emits tick 1, 2, 3, ... per agent boot; a hole or a repeat in the store means loss or duplication."""

    name = "heartbeat"
    tables = ("agent_heartbeat",)

    class Options(SectionOptions):
        """Config keys of ``[agent.samplers.heartbeat]`` (only the common ones)."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.boot_ns = time.time_ns()
        self._boot_monotonic = time.monotonic()
        self.tick = 0

    @classmethod
    def from_options(cls, opts: HeartbeatSampler.Options, ctx: SamplerContext) -> HeartbeatSampler:
        """Build from validated options."""
        return cls(ctx.labels.get("agent_id", ctx.node))

    def probe(self) -> None:
        """Always available."""

    def sample(self, now_ns: int) -> Rows:
        """The next tick."""
        self.tick += 1
        return {
            "agent_heartbeat": [
                {
                    "agent_id": self.agent_id,
                    "boot_ns": self.boot_ns,
                    "tick": self.tick,
                    "uptime_s": time.monotonic() - self._boot_monotonic,
                }
            ]
        }

    def close(self) -> None:
        """Nothing to release."""
