"""Operators' holds on remediation inside the collector: check a SetHold request, store the change in
``remediation_holds``, load the holds in force at start, and answer with every hold (operators' and
the config's)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from c4.analytics.holds import SCOPES, HoldBook, HoldChange, HoldEntry
from c4.collector.store import PendingBatch, Store
from c4.collector.writer import Writer
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.wire_limits import MAX_JOB_CHARS, shown, text_problem

#: Longest ``by`` (who) of a hold request, in characters.
MAX_BY_CHARS = 128
#: Longest note of a hold request, in characters.
MAX_NOTE_CHARS = 500

#: The operators' holds in force (the catalogue's view), read at start.
CURRENT_HOLDS_SQL = "SELECT * FROM remediation_holds_current"


def hold_request_problem(request: pb.HoldRequest) -> str | None:
    """What is wrong with a SetHold request (None if nothing); the message names the field."""
    if request.scope not in SCOPES:
        return f"scope must be one of {', '.join(SCOPES)}, not {shown(request.scope)}"
    if request.scope == "job" and not request.job.strip():
        return "job is empty: scope job needs the job to hold or release (scope cluster for every job)"
    if request.scope == "cluster" and request.job:
        return f"job {shown(request.job)} given with scope cluster (a cluster-wide hold names no job)"
    if request.job != request.job.strip():
        return f"job {shown(request.job)} has leading or trailing blanks"
    return (
        text_problem("job", request.job, MAX_JOB_CHARS)
        or text_problem("by", request.by, MAX_BY_CHARS)
        or text_problem("note", request.note, MAX_NOTE_CHARS)
    )


def hold_message(entry: HoldEntry) -> pb.RemediationHold:
    """One hold in force, as the wire carries it."""
    since = entry.since.replace(tzinfo=UTC).timestamp() if entry.since else 0.0
    return pb.RemediationHold(
        scope=entry.scope,
        job=entry.job,
        source=entry.source,
        by=entry.by,
        note=entry.note,
        since_unix_s=since,
    )


class HoldKeeper:
    """Sets and releases operators' holds in ``book``: stored through the writer, then in force."""

    def __init__(self, book: HoldBook, store: Store, writer: Writer, node: str) -> None:
        self.book = book
        self.store = store
        self.writer = writer
        self.node = node
        self._lock = asyncio.Lock()  # one change at a time: each is decided on the book as it stands

    def load(self) -> None:
        """Take in the operators' holds a previous collector process stored (blocking: reads the store)."""
        cur = self.store.cursor()
        try:
            rows = cur.execute(CURRENT_HOLDS_SQL).pl().to_dicts()
        finally:
            cur.close()
        self.book.load(rows)

    async def change(self, request: pb.HoldRequest, caller: str) -> HoldChange:
        """Apply a checked request: the row is committed before the hold takes effect (or is lifted)."""
        async with self._lock:
            now = datetime.now(UTC).replace(tzinfo=None)
            change = self.book.change(request.scope, request.job, request.hold, request.by, request.note, now)
            if change.row is None:
                return change
            row = {**change.row, "node": self.node, "caller": caller}
            stored = await self.writer.submit_async(
                PendingBatch.internal(self.store.catalogue["remediation_holds"], [row])
            )
            if stored.error:
                raise RuntimeError(f"could not store the hold: {stored.error}")
            self.book.apply(row)
            return change

    def reply(self, change: HoldChange | None = None, resumed_steps: int = 0) -> pb.HoldReply:
        """Every hold in force, with what the request did."""
        message = change.message if change else ""
        if resumed_steps:
            message += f"; {resumed_steps} held remediation step(s) of open faults run now"
        return pb.HoldReply(
            holds=[hold_message(e) for e in self.book.holds()],
            changed=bool(change and change.changed),
            message=message,
            resumed_steps=resumed_steps,
        )
