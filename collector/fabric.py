"""Fabric discovery inside the collector: every pass assembles the cabling from the newest
fabric_neighbors rows (traffic/discovery.py) and stores it in fabric_topology, with what contradicts
the fabric YAML, the majority or the previous pass in fabric_contradictions.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from c4.collector.store import PendingBatch, Store
from c4.collector.writer import Writer
from c4.traffic.discovery import Discovery, assemble
from c4.traffic.topology import Topology, load_yaml

log = logging.getLogger("c4.collector.fabric")

#: Each agent's newest poll per source, no older than the freshness window.
NEWEST_NEIGHBORS_SQL = """
SELECT * FROM fabric_neighbors
WHERE ts >= ?
QUALIFY ts = max(ts) OVER (PARTITION BY node, source)
"""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def newest_neighbors(cur: duckdb.DuckDBPyConnection, now: datetime, fresh_s: float) -> list[dict[str, Any]]:
    """The rows of each agent's newest poll per source within ``fresh_s`` of ``now``."""
    since = now - timedelta(seconds=fresh_s)
    return cur.execute(NEWEST_NEIGHBORS_SQL, [since]).to_arrow_table().to_pylist()


def previous_links(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The cables of the newest stored pass."""
    return cur.execute("SELECT * FROM fabric_topology_current").to_arrow_table().to_pylist()


def discover(
    cur: duckdb.DuckDBPyConnection, now: datetime, fresh_s: float, expected: Topology | None = None
) -> Discovery:
    """One assembly pass over the store (blocking: reads it)."""
    return assemble(newest_neighbors(cur, now, fresh_s), expected, previous_links(cur))


def pass_rows(found: Discovery, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """A pass as fabric_topology and fabric_contradictions rows stamped ``now``."""
    common = {"ts": now, "node": "", "job": ""}
    return {
        "fabric_topology": [common | x.row() for x in found.links],
        "fabric_contradictions": [common | c.row() for c in found.contradictions],
    }


class FabricDiscovery:
    """Runs discovery passes: reads in ``pool``, commits through the writer thread."""

    def __init__(
        self,
        store: Store,
        writer: Writer,
        pool: ThreadPoolExecutor,
        fresh_s: float,
        fabric_yaml: str = "",
    ) -> None:
        self.store = store
        self.writer = writer
        self.pool = pool
        self.fresh_s = fresh_s
        self.expected = load_yaml(fabric_yaml) if fabric_yaml else None

    def _work(self, now: datetime) -> Discovery:
        cur = self.store.cursor()
        try:
            return discover(cur, now, self.fresh_s, self.expected)
        finally:
            cur.close()

    async def run(self) -> Discovery:
        """One pass, stored; contradictions are logged once per pass."""
        now = _now()
        found = await asyncio.get_running_loop().run_in_executor(self.pool, self._work, now)
        if found.skipped:
            log.warning("fabric neighbour rows left out reasons=%s", dict(found.skipped))
        if not found.links and not found.contradictions:
            return found
        for table, rows in pass_rows(found, now).items():
            if not rows:
                continue
            stored = await self.writer.submit_async(PendingBatch.internal(self.store.catalogue[table], rows))
            if stored.error:
                raise RuntimeError(f"could not store {len(rows)} {table} rows: {stored.error}")
        if found.contradictions:
            log.warning(
                "fabric contradictions count=%d kinds=%s",
                len(found.contradictions),
                ",".join(sorted({c.kind for c in found.contradictions})),
            )
        return found
