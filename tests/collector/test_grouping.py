"""CommitGroup: many agents' batches merged per table as bytes, decoded back into the same batches."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest
from test_bad_input import heartbeat_table

from c4.arrow_ipc import encode_ipc
from c4.catalogue import load
from c4.collector.grouping import GroupError, decode_group, encode_group
from c4.collector.store import PendingBatch
from c4.collector.validate import validate_payload
from c4.telemetry.v1 import telemetry_pb2 as pb

CATALOGUE = load()


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
    two_chunks = pa.concat_tables([heartbeat_table("c", range(1, 3)), heartbeat_table("c", range(3, 6))])
    assert two_chunks.num_columns and len(two_chunks.to_batches()) == 2
    reordered = heartbeat_table("d", range(1, 4))
    reordered = reordered.select(list(reversed(reordered.column_names)))  # needs a cast: no wire bytes
    batches = [
        admitted("a", 1, "agent_heartbeat", encode_ipc(heartbeat_table("a", range(1, 4)))),
        admitted("a", 2, "host_memory", encode_ipc(memory("a", 2))),
        admitted("b", 7, "agent_heartbeat", encode_ipc(heartbeat_table("b", range(10, 11)))),
        admitted("c", 1, "agent_heartbeat", encode_ipc(two_chunks)),
        admitted("d", 1, "agent_heartbeat", encode_ipc(reordered)),
        admitted("b", 8, "host_memory", encode_ipc(memory("b", 0))),
        PendingBatch("", 0, CATALOGUE["agent_heartbeat"], heartbeat_table("internal", range(1, 2))),
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


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda g: setattr(g.entries[0], "rows", 2), "has 3 rows, its entries 2"),
        (lambda g: setattr(g.entries[0], "rows", 4), "its entries more"),
        (lambda g: setattr(g.tables[0], "table", "no_such_table"), "unknown table 'no_such_table'"),
        (lambda g: setattr(g.entries[0], "table_index", 5), "names table #5"),
        (lambda g: setattr(g.tables[0], "arrow_ipc", b"\xff\xff\xff\xffnot arrow"), "corrupt Arrow IPC"),
    ],
    ids=["too-few-rows", "too-many-rows", "unknown-table", "stray-index", "corrupt-payload"],
)
def test_a_group_that_does_not_add_up_is_refused_by_name(damage, message):
    batch = admitted("a", 1, "agent_heartbeat", encode_ipc(heartbeat_table("a", range(1, 4))))
    group = encode_group([batch])
    damage(group)
    with pytest.raises(GroupError, match=message):
        decode_group(group, CATALOGUE)
