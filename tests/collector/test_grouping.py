"""CommitGroup: many agents' batches merged per table as bytes, decoded back into the same batches."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

from c4.arrow_ipc import encode_ipc
from c4.catalogue import load
from c4.collector.grouping import GroupError, decode_group, encode_group
from c4.collector.store import PendingBatch
from c4.collector.validate import validate_payload
from c4.telemetry.v1 import telemetry_pb2 as pb

CATALOGUE = load()


def heartbeat(node: str, ticks: range) -> pa.Table:
    spec = CATALOGUE["agent_heartbeat"]
    rows = [
        {
            "ts": datetime(2026, 1, 1),
            "node": node,
            "job": "",
            "agent_id": node,
            "boot_ns": 1,
            "tick": t,
            "uptime_s": 0.5,
        }
        for t in ticks
    ]
    return pa.Table.from_pylist(rows, schema=spec.arrow_schema)


def memory(node: str, n: int) -> pa.Table:
    spec = CATALOGUE["host_memory"]
    return pa.Table.from_pylist(
        [
            {c: None for c in spec.column_names} | {"node": node, "ts": datetime(2026, 1, 1, 0, 0, i)}
            for i in range(n)
        ],
        schema=spec.arrow_schema,
    )


def admitted(agent: str, seq: int, table: str, payload: bytes) -> PendingBatch:
    """What an ingest process makes of a received batch (wire bytes kept when they are exact)."""
    spec, data, span = validate_payload(CATALOGUE, table, CATALOGUE[table].version, payload, 1 << 24)
    parts = (payload[: span[0]], memoryview(payload)[span[0] : span[1]]) if span else None
    return PendingBatch(agent, seq, spec, data, parts)


def test_batches_of_many_agents_and_tables_come_back_whole_and_in_order():
    two_chunks = pa.concat_tables([heartbeat("c", range(1, 3)), heartbeat("c", range(3, 6))])
    assert two_chunks.num_columns and len(two_chunks.to_batches()) == 2
    reordered = heartbeat("d", range(1, 4))
    reordered = reordered.select(list(reversed(reordered.column_names)))  # needs a cast: no wire bytes
    batches = [
        admitted("a", 1, "agent_heartbeat", encode_ipc(heartbeat("a", range(1, 4)))),
        admitted("a", 2, "host_memory", encode_ipc(memory("a", 2))),
        admitted("b", 7, "agent_heartbeat", encode_ipc(heartbeat("b", range(10, 11)))),
        admitted("c", 1, "agent_heartbeat", encode_ipc(two_chunks)),
        admitted("d", 1, "agent_heartbeat", encode_ipc(reordered)),
        admitted("b", 8, "host_memory", encode_ipc(memory("b", 0))),
        PendingBatch("", 0, CATALOGUE["agent_heartbeat"], heartbeat("internal", range(1, 2))),
    ]
    assert batches[0].ipc_parts is not None and batches[4].ipc_parts is None
    group = encode_group(batches, {"refused_columns": 2})
    # the wire form: one payload per table and schema (the cast batch and internal rows encoded apart)
    assert len(group.tables) == 3 and dict(group.counters) == {"refused_columns": 2}
    back = decode_group(pb.CommitGroup.FromString(group.SerializeToString()), CATALOGUE)
    assert [(b.agent_id, b.seq, b.spec.name) for b in back] == [
        (b.agent_id, b.seq, b.spec.name) for b in batches
    ]
    for got, sent in zip(back, batches, strict=True):
        assert got.table.equals(sent.table), (got.agent_id, got.seq)


def test_a_group_that_does_not_add_up_is_refused_by_name():
    batch = admitted("a", 1, "agent_heartbeat", encode_ipc(heartbeat("a", range(1, 4))))
    good = encode_group([batch])
    short = pb.CommitGroup()
    short.CopyFrom(good)
    short.entries[0].rows = 2
    with pytest.raises(GroupError, match="has 3 rows, its entries 2"):
        decode_group(short, CATALOGUE)
    long = pb.CommitGroup()
    long.CopyFrom(good)
    long.entries[0].rows = 4
    with pytest.raises(GroupError, match="its entries more"):
        decode_group(long, CATALOGUE)
    unknown = pb.CommitGroup()
    unknown.CopyFrom(good)
    unknown.tables[0].table = "no_such_table"
    with pytest.raises(GroupError, match="unknown table 'no_such_table'"):
        decode_group(unknown, CATALOGUE)
    stray = pb.CommitGroup()
    stray.CopyFrom(good)
    stray.entries[0].table_index = 5
    with pytest.raises(GroupError, match="names table #5"):
        decode_group(stray, CATALOGUE)
    corrupt = pb.CommitGroup()
    corrupt.CopyFrom(good)
    corrupt.tables[0].arrow_ipc = b"\xff\xff\xff\xffnot arrow"
    with pytest.raises(GroupError, match="corrupt Arrow IPC"):
        decode_group(corrupt, CATALOGUE)
