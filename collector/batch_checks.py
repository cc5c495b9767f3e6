"""The value checks of agents' batches, many agents' batches of one table at once, in the writer thread.

The event loop only frames a payload (``validate.frame_payload``: its size, table, version, schema and
declared size); decoding and checking each small batch there cost more than the rest of ingest.
Here the record batches of one table's payloads are joined into one Arrow stream and read in one
call, and every check of ``validate.check_payload`` runs once over all their rows: full Arrow
validation (UTF-8 included), list lengths, timestamp ranges, a NULL time, the node each row names,
and rows dated ahead of the collector clamped. When anything in a group is wrong, its batches are
checked one by one the usual way, so that only the bad ones are refused, each with its own reason.
An agent whose batch was refused has its batches checked apart from the others' for a while
(``Suspects``): one hostile agent sending a bad batch with every flush would otherwise send every
other agent's batches of that table down the one-by-one path with it, every commit.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from c4.collector import validate
from c4.collector.store import CommitResult, PendingBatch, Store
from c4.collector.validate import Refusal, clamp_future
from c4.wire_limits import shown

log = logging.getLogger("c4.collector.batch_checks")


#: How long the batches of an agent one of whose batches was refused are checked apart from the others'.
SUSPECT_S = 60.0
#: Agents kept in ``Suspects`` at most (the longest-known go first): new agent ids cannot grow it without bound.
MAX_SUSPECTS = 4096


class _Irregular(Exception):
    """A group that cannot be checked together: its batches are checked one by one."""


class Suspects:
    """Agents a value check refused a batch of in the last ``hold_s``: their batches are checked in groups
    of their own, so that the other agents' batches of the same table stay checked together."""

    def __init__(
        self,
        hold_s: float = SUSPECT_S,
        max_agents: int = MAX_SUSPECTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hold_s = hold_s
        self.max_agents = max_agents
        self._clock = clock
        self._until: dict[str, float] = {}  # agent -> clock() until which it is suspect; oldest note first

    def note(self, agent_id: str) -> None:
        """One of the agent's batches was refused: suspect for ``hold_s`` from now."""
        self._until.pop(agent_id, None)
        self._until[agent_id] = self._clock() + self.hold_s
        while len(self._until) > self.max_agents:
            del self._until[next(iter(self._until))]

    def __contains__(self, agent_id: object) -> bool:
        until = self._until.get(agent_id)  # type: ignore[call-overload]  # any key: absent is not suspect
        if until is None:
            return False
        if until < self._clock():
            del self._until[agent_id]  # type: ignore[arg-type]
            return False
        return True

    def __len__(self) -> int:
        return len(self._until)


def commit_checked(
    store: Store, batches: Sequence[PendingBatch], suspects: Suspects | None = None
) -> list[CommitResult]:
    """``store.commit`` of the batches, the ``unchecked`` ones checked first (refused ones not inserted);
    ``suspects`` (kept by the caller across commits) learns the agents refused, and has theirs checked apart."""
    refusals = check_unchecked(batches, suspects)
    if refusals is None:
        return store.commit(batches)
    keep = [i for i, refused in enumerate(refusals) if refused is None]
    results: list[CommitResult | None] = list(refusals)
    for i, result in zip(keep, store.commit([batches[i] for i in keep]), strict=True):
        results[i] = result
    return results  # type: ignore[return-value]  # every kept one was replaced by its commit result


def check_unchecked(
    batches: Sequence[PendingBatch], suspects: Suspects | None = None
) -> list[CommitResult | None] | None:
    """Decode and check every ``unchecked`` batch; None when there is none, else per batch its refusal
    (a refused CommitResult) or None. A table's batches are checked together, those of each agent in
    ``suspects`` in a group of their own; every agent refused is noted there.

    An accepted batch gets its rows (``source``, or ``table`` when checked alone) and its ``clock``.
    """
    groups: dict[tuple[str, bytes, str], list[int]] = {}
    for i, b in enumerate(batches):
        if b.unchecked is not None:
            apart = b.agent_id if suspects is not None and b.agent_id in suspects else ""
            groups.setdefault((b.spec.name, b.unchecked.frame.schema_key, apart), []).append(i)
    if not groups:
        return None
    notes: list[CommitResult | None] = [None] * len(batches)
    for indices in groups.values():
        group = [batches[i] for i in indices]
        try:
            outcomes = _check_together(group)
        except Exception:  # a bad batch among them, or a check that broke: find which, one by one
            outcomes = [_check_alone(b) for b in group]
        for i, outcome in zip(indices, outcomes, strict=True):
            notes[i] = outcome
            if outcome is not None and outcome.refused and suspects is not None:
                suspects.note(batches[i].agent_id)
    return notes


def _check_together(group: list[PendingBatch]) -> list[CommitResult | None]:
    """Decode a table's batches as one and check all their rows at once; _Irregular (or any error)
    when something is wrong with any of them."""
    spec = group[0].spec
    table = validate.decode_frames([(b.unchecked.payload, b.unchecked.frame) for b in group])
    validate.check_values(spec, table)  # Refusal: one of them holds a value it may not
    rows = np.fromiter((b.unchecked.frame.rows for b in group), dtype=np.int64, count=len(group))
    ends = np.cumsum(rows)
    starts = ends - rows
    _check_nodes(table, group, rows)
    newest: list[int | None] = [None] * len(group)
    clamped = np.zeros(len(group), dtype=np.int64)
    first_nodes: list[str] = [""] * len(group)
    if spec.time_column and table.num_rows:
        table, newest, clamped = _times(spec, table, group, rows, starts, ends)
        if "node" in table.column_names:
            nonempty = np.flatnonzero(rows)
            names = table.column("node").take(pa.array(starts[nonempty])).to_pylist()
            for i, name in zip(nonempty, names, strict=True):
                first_nodes[i] = name or ""
    for b, start, n, new, cl, node in zip(
        group, starts.tolist(), rows.tolist(), newest, clamped.tolist(), first_nodes, strict=True
    ):
        b.source = (table, start, n)
        b.clock = (new, cl, node or b.agent_id)
        b.unchecked = None
    return [None] * len(group)


def _check_nodes(table: pa.Table, group: list[PendingBatch], rows: np.ndarray) -> None:
    """_Irregular unless every row of a batch whose node is checked names that node."""
    required = [b.unchecked.node for b in group]
    if all(node is None for node in required):
        return
    if any(node is None for node in required) or "node" not in table.column_names:
        raise _Irregular("mixed node checks")
    column = table.column("node")
    expected = pa.array(required, pa.string()).take(pa.array(np.repeat(np.arange(len(group)), rows)))
    if column.null_count or not pc.all(pc.equal(column, expected), min_count=0).as_py():
        raise _Irregular("rows of another node")


def _times(spec, table: pa.Table, group: list[PendingBatch], rows, starts, ends):
    """(table with rows dated ahead clamped, newest time per batch before clamping, rows clamped per batch)."""
    index = spec.column_names.index(spec.time_column)
    chunk = table.column(index).chunk(0)  # one chunk, no nulls: decode_frames and check_values made sure
    ts = np.frombuffer(chunk.buffers()[1], dtype=np.int64, count=len(chunk), offset=chunk.offset * 8)
    newest: list[int | None] = [None] * len(group)
    nonempty = np.flatnonzero(rows)
    for i, value in zip(nonempty, np.maximum.reduceat(ts, starts[nonempty]).tolist(), strict=True):
        newest[i] = value
    limit = np.repeat(np.fromiter((b.unchecked.limit_us for b in group), np.int64, len(group)), rows)
    ahead = ts > limit
    if not ahead.any():
        return table, newest, np.zeros(len(group), dtype=np.int64)
    to = np.repeat(np.fromiter((b.unchecked.received_us for b in group), np.int64, len(group)), rows)
    fixed = pa.array(np.where(ahead, to, ts), pa.int64()).cast(chunk.type)
    table = table.set_column(index, spec.arrow_schema.field(index), fixed)
    counts = np.concatenate(([0], np.cumsum(ahead)))
    return table, newest, counts[ends] - counts[starts]


def _check_alone(b: PendingBatch) -> CommitResult | None:
    """Every check of one batch on its own (``validate.check_payload``'s path): its result, rows set."""
    u = b.unchecked
    try:
        checked = validate.check_payload_of(b.spec, u.payload, u.limits)
        table = checked.table
        if u.node is not None and table.num_rows:
            column = table.column("node")
            if column.null_count or not pc.all(pc.equal(column, u.node), min_count=0).as_py():
                raise Refusal(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"agent {b.agent_id!r} may write rows of node {u.node!r} only",
                    "refused_other_node",
                )
        clamped = 0
        if checked.newest_us is not None and checked.newest_us > u.limit_us:
            table, clamped = clamp_future(b.spec, table, u.limit_us, u.received_us)
    except Refusal as refusal:
        return _refused(refusal)
    except Exception as exc:  # a check that broke on this input: refuse the batch, keep serving
        error = f"{type(exc).__name__}: {exc}"
        log.error(
            "batch check failed agent=%s seq=%d table=%s error=%s\n%s",
            b.agent_id,  # checked when it was received
            b.seq,
            b.spec.name,
            shown(error, 300),  # the exception may quote the hostile input: escaped, cut short
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        return _refused(
            Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch could not be checked ({error})",
                "refused_check_failed",
            )
        )
    b.table = table
    b.unchecked = None
    node = ""
    if table.num_rows and "node" in table.column_names:
        node = table.column("node")[0].as_py() or ""
    b.clock = (checked.newest_us, clamped, node or b.agent_id)
    return None


def _refused(refusal: Refusal) -> CommitResult:
    """The result of a batch refused by its value checks (never retried: the agent drops it)."""
    return CommitResult(
        error=refusal.message,
        refused=True,
        code=refusal.code.value[0],
        counter=refusal.counter,
    )
