"""Rows for lake tests: agent_heartbeat batches as a collector's writer commits them."""

from __future__ import annotations

import pyarrow as pa

from c4.catalogue import load
from c4.collector.store import PendingBatch

CATALOGUE = load()


def beats(agent: str, seq: int, rows: int) -> PendingBatch:
    """``rows`` heartbeats of ``agent`` as its batch ``seq`` (ticks 0..rows-1; 10 rows or fewer are inlined
    in a lake's catalog, more make a Parquet file)."""
    spec = CATALOGUE["agent_heartbeat"]
    cols = {c: [None] * rows for c in spec.column_names}
    cols.update(node=[agent] * rows, agent_id=[agent] * rows, tick=list(range(rows)))
    return PendingBatch(agent, seq, spec, pa.Table.from_pydict(cols, schema=spec.arrow_schema))
