"""Many agents' validated batches as one ``CommitGroup`` message, and back.

An ingest process concatenates the batches it holds per table (one Arrow IPC stream per table
instead of one per batch), so the store process decodes a handful of payloads per group and
spends no per-batch work beyond slicing; each entry keeps its agent, sequence and row count, so
the store commits exactly once per agent sequence as it does for ``Push``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa

from c4.arrow_ipc import IPC_EOS, decode_ipc, encode_ipc
from c4.catalogue import Catalogue
from c4.collector.store import CommitResult, PendingBatch
from c4.telemetry.v1 import telemetry_pb2 as pb


class GroupError(ValueError):
    """A CommitGroup that does not add up (a bug or version skew between a collector's processes)."""


def encode_group(
    batches: Sequence[PendingBatch], counters: Mapping[str, int] | None = None
) -> pb.CommitGroup:
    """Validated batches (any tables, any agents) -> one CommitGroup, entries in the given order.

    Batches that kept their wire bytes (``ipc_parts``) are merged as bytes: one schema message,
    then every batch's record batch messages, then the end-of-stream marker, which decodes to
    the same rows with no Arrow work here. Others (internal rows, cast batches) are concatenated
    and encoded.
    """
    index: dict[tuple[str, bytes | None], int] = {}
    bodies: list[list] = []
    entries = []
    for b in batches:
        schema_msg = b.ipc_parts[0] if b.ipc_parts is not None else None
        key = (b.spec.name, schema_msg)
        i = index.get(key)
        if i is None:
            i = index[key] = len(bodies)
            bodies.append([])
        bodies[i].append(b.ipc_parts[1] if b.ipc_parts is not None else b.table)
        entries.append(
            pb.GroupEntry(
                agent_id=b.agent_id,
                seq=b.seq,
                table_index=i,
                rows=b.num_rows,
                stream=b.stream,
                spool_epoch=b.spool_epoch,
            )
        )
    tables = []
    for (name, schema_msg), i in index.items():
        if schema_msg is not None:
            payload = b"".join([schema_msg, *bodies[i], IPC_EOS])
        else:  # one record batch per table: the store appends it without walking many small chunks
            payload = encode_ipc(pa.concat_tables(bodies[i]).combine_chunks())
        tables.append(pb.GroupedTable(table=name, arrow_ipc=payload))
    return pb.CommitGroup(tables=tables, entries=entries, counters=dict(counters or {}))


def decode_group(group: pb.CommitGroup, catalogue: Catalogue) -> list[PendingBatch]:
    """A CommitGroup -> one PendingBatch per entry (zero-copy slices); GroupError names what is wrong."""
    decoded = []
    for t in group.tables:
        if t.table not in catalogue:
            raise GroupError(f"group has unknown table {t.table!r}")
        spec = catalogue[t.table]
        try:
            data = decode_ipc(t.arrow_ipc)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise GroupError(f"group table {t.table!r}: corrupt Arrow IPC payload: {exc}") from None
        if not data.schema.equals(spec.arrow_schema):
            raise GroupError(f"group table {t.table!r}: schema differs from the catalogue's")
        decoded.append((spec, data))
    cursors = [_RowCursor(data) for _, data in decoded]
    out = []
    for e in group.entries:
        if e.table_index >= len(decoded):
            raise GroupError(
                f"group entry of agent {e.agent_id!r} names table #{e.table_index}, group has {len(decoded)}"
            )
        spec, _ = decoded[e.table_index]
        rows = cursors[e.table_index].take(e.rows, spec.name)
        out.append(PendingBatch(e.agent_id, e.seq, spec, rows, stream=e.stream, spool_epoch=e.spool_epoch))
    for (spec, data), cursor in zip(decoded, cursors, strict=True):
        if cursor.taken != data.num_rows:
            raise GroupError(
                f"group table {spec.name!r} has {data.num_rows} rows, its entries {cursor.taken}"
            )
    return out


class _RowCursor:
    """Hands out consecutive rows of a many-chunk table, by whole record batches where they line up.

    Slicing a table of a thousand chunks walks its chunks each time; an entry's rows are usually
    exactly one of the record batches it was sent as.
    """

    def __init__(self, data: pa.Table) -> None:
        self.schema = data.schema
        self.batches = data.to_batches()
        self.num_rows = data.num_rows
        self.i = 0  # current batch
        self.offset = 0  # rows of it already handed out
        self.taken = 0

    def take(self, rows: int, name: str) -> pa.Table:
        """The next ``rows`` rows; GroupError when the table has fewer left."""
        if self.taken + rows > self.num_rows:
            raise GroupError(f"group table {name!r} has {self.num_rows} rows, its entries more")
        parts = []
        need = rows
        while need:
            batch = self.batches[self.i]
            n = min(need, batch.num_rows - self.offset)
            parts.append(batch if n == batch.num_rows else batch.slice(self.offset, n))
            need -= n
            self.offset += n
            if self.offset == batch.num_rows:
                self.i += 1
                self.offset = 0
        self.taken += rows
        return pa.Table.from_batches(parts, self.schema)


def reply_for(results: Sequence[CommitResult]) -> pb.CommitReply:
    """Commit results -> the CommitReply, one EntryResult per entry."""
    return pb.CommitReply(
        results=[
            pb.EntryResult(rows=r.rows, duplicate=r.duplicate, error=r.error, refused=r.refused)
            for r in results
        ]
    )


def results_of(reply: pb.CommitReply) -> list[CommitResult]:
    """A CommitReply -> commit results, one per entry of the group."""
    return [
        CommitResult(rows=r.rows, duplicate=r.duplicate, error=r.error, refused=r.refused)
        for r in reply.results
    ]
