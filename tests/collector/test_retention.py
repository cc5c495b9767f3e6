"""Retention drops rows older than the configured age and keeps the rest."""

import asyncio
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from c4.collector.server import Collector
from c4.collector.store import PendingBatch
from c4.config import CollectorConfig


def test_retention_deletes_only_old_rows(tmp_path):
    cfg = CollectorConfig(listen="127.0.0.1:0", db=tmp_path / "c4.duckdb", retention_s=3600)

    async def scenario() -> tuple[dict, list]:
        col = Collector(cfg)
        await col.start()
        try:
            spec = col.store.catalogue["agent_heartbeat"]
            now = datetime.now(UTC).replace(tzinfo=None)
            rows = [
                {
                    "ts": now - timedelta(hours=h),
                    "node": "n",
                    "job": "",
                    "agent_id": "n",
                    "boot_ns": 1,
                    "tick": h,
                    "uptime_s": 0.0,
                }
                for h in (0, 2, 5)
            ]
            batch = PendingBatch("n", 1, spec, pa.Table.from_pylist(rows, schema=spec.arrow_schema))
            assert (await col.writer.submit_async(batch)).rows == 3
            deleted = await col.retain()
            left = col.store.cursor().execute("SELECT tick FROM agent_heartbeat ORDER BY tick").fetchall()
            return deleted, left
        finally:
            await col.stop()

    deleted, left = asyncio.run(scenario())
    assert deleted == {"agent_heartbeat": 2}
    assert left == [(0,)]
