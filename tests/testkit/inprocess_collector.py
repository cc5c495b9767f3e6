"""A real collector in this process (its event loop on a background thread), for tests that reach
into its parts: its store, its counters, its flush advisor."""

from __future__ import annotations

import asyncio
import threading

from c4.collector.server import Collector
from c4.config import CollectorConfig


class RunningCollector:
    """A real collector on a loopback port, its event loop on a background thread."""

    def __init__(self, tmp_path, **cfg) -> None:
        self.cfg = CollectorConfig(
            **{"listen": "127.0.0.1:0", "db": tmp_path / "c4.duckdb", "diagnose_interval_s": 0, **cfg}
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.collector = self._call(self._start())

    async def _start(self) -> Collector:
        col = Collector(self.cfg)
        await col.start()
        return col

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.collector.port}"

    def rows(self, node: str) -> tuple[int, int]:
        cur = self.collector.store.cursor()
        try:
            return cur.execute(
                "SELECT count(*), count(DISTINCT tick) FROM agent_heartbeat WHERE node = ?", [node]
            ).fetchone()
        finally:
            cur.close()

    def counters(self) -> dict[str, int]:
        return self.collector.metrics.snapshot()

    def committed_batches(self) -> int:
        """Agents' batches committed so far."""
        return self.counters().get("batches_committed", 0)

    def stop(self) -> None:
        self._call(self.collector.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
