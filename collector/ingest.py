"""Receiving agents' batches: check each one, hand the valid ones to a commit sink, ack after commit.

Shared by the collector's own server and its ingest processes (``c4.collector.ingest_process``): the sink
is the writer thread in the first, the store process behind a private socket in the second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Protocol

import grpc
import pyarrow.compute as pc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from c4.arrow_ipc import DecodeLimits
from c4.catalogue import Catalogue
from c4.collector import validate
from c4.collector.auth import Authenticator, AuthError, certificate_name
from c4.collector.clock import ClockWatch, node_of
from c4.collector.flush_advice import FlushAdvisor
from c4.collector.sequence import new_stream_id
from c4.collector.store import CommitResult, PendingBatch, Unchecked
from c4.collector.validate import Refusal, clamp_future
from c4.collector.writer import Writer
from c4.config import CollectorConfig
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc
from c4.wire_limits import MAX_SEQ, agent_id_problem, hostname_problem, seq_problem, shown

log = logging.getLogger("c4.collector")

SERVICE_NAME = "c4.telemetry.v1.Telemetry"


def agent_server(
    cfg: CollectorConfig, *options: tuple[str, int]
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """The gRPC server agents reach (the collector's, or an ingest process's), with the health service."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", cfg.max_batch_bytes * 4 + (1 << 20)),
            ("grpc.max_send_message_length", 64 << 20),
            # gRPC cancels a call its server has not picked up within 30 s; with a busy event loop
            # (a thousand agents reconnecting at once) give it as long as the agents' Hello timeout
            ("grpc.server_max_unrequested_time_in_server", 120),
            *options,
        ]
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server, health_servicer


def bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Listen on ``address`` (TLS when credentials are given); the bound port, OSError when it cannot."""
    if credentials is not None:
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if not port:
        raise OSError(f"cannot listen on {address}")
    return port


async def set_serving(health_servicer: health.aio.HealthServicer) -> None:
    """Tell health checks (overall and the Telemetry service) that the server is serving."""
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


class Metrics:
    """The collector's own counters (thread-safe)."""

    def __init__(self) -> None:
        self._c: Counter[str] = Counter()
        self._lock = threading.Lock()

    def inc(self, name: str, n: int = 1) -> None:
        """Add n to a counter."""
        with self._lock:
            self._c[name] += n

    def add(self, counts: Counter[str] | dict[str, int]) -> None:
        """Add several counters at once (one lock for a whole bundle)."""
        with self._lock:
            self._c.update(counts)

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._c)


class StreamError(Exception):
    """A stream that cannot go on: the status code and message it ends with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CommitSink(Protocol):
    """Where valid batches go to be committed: the writer thread, or the store process."""

    def submit_async(self, batch: PendingBatch) -> asyncio.Future[CommitResult]:
        """Commit one batch; the future gets its result."""
        ...

    def submit_many_async(self, batches: list[PendingBatch]) -> asyncio.Future[list[CommitResult]]:
        """Commit batches (in one go where possible); the future gets their results in order."""
        ...


def commit_busy_clock(sink: CommitSink) -> Callable[[], float] | None:
    """The seconds the sink has spent committing so far, as a function, when it is this process's
    writer; None for a sink that forwards batches to another process (the store process's)."""
    return (lambda: sink.commit_busy_s) if isinstance(sink, Writer) else None


class StreamState:
    """One Push or PushBundle call: its id, and the seq of its first batch answered with a retryable error.

    An agent that gets a retryable answer reconnects and sends that batch and every later one again;
    none of the later ones may commit before it (the next Hello would report them committed and the
    agent would drop the failed one), so once one failed the rest of the stream is held back.
    """

    def __init__(self) -> None:
        self.id = new_stream_id()
        self.failed_seq = 0

    def note(self, batch: pb.Batch, outcome: Refusal | CommitResult) -> None:
        """Remember the first batch of this stream whose answer is retryable."""
        if self.failed_seq:
            return
        if outcome.retryable if isinstance(outcome, Refusal) else (outcome.error and not outcome.refused):
            self.failed_seq = batch.seq

    def held(self, batch: pb.Batch) -> Refusal:
        """The retryable answer of a batch that follows a failed one."""
        return Refusal(
            grpc.StatusCode.UNAVAILABLE,
            f"seq {batch.seq} not committed: seq {self.failed_seq} of the same stream failed before it "
            "(reconnect and send again from the last committed sequence)",
            "held_after_failure",
        )


class IngestService(pb_grpc.TelemetryServicer):
    """Push and PushBundle: validate each batch, commit the valid ones through a sink, ack each."""

    #: Keep each valid batch's wire bytes (PendingBatch.ipc_parts) for a sink that forwards them.
    keep_ipc_parts = False
    #: Only frame what agents send and leave the values to the writer, which checks many agents'
    #: batches of a table at once (``c4.collector.batch_checks``): for a sink that is this process's writer.
    defer_checks = False

    def __init__(
        self,
        cfg: CollectorConfig,
        catalogue: Catalogue,
        writer: CommitSink,
        metrics: Metrics,
        auth: Authenticator | None = None,
    ) -> None:
        self.cfg = cfg
        self.catalogue = catalogue
        self.writer = writer
        self.metrics = metrics
        self.auth = auth or Authenticator(None, metrics.inc)
        self.limits = DecodeLimits(cfg.max_batch_rows, cfg.max_batch_decoded_bytes)
        #: how often agents are asked to flush, from how long this process's commits take (and, where the
        #: writer is this process's, how busy committing keeps it)
        self.flush_advisor = FlushAdvisor(cfg.agent_flush_max_s, busy_s=commit_busy_clock(writer))
        self._advice_changed: asyncio.Future | None = None  # see _advice_change
        self.max_skew_us = int(cfg.max_clock_skew_s * 1e6)
        self.clock = ClockWatch(cfg.clock_skew_interval_s)
        self._clock_next_s = 0.0
        self._good_ids: set[str] = set()  # agent ids already found to follow the rules
        #: agent id -> the node its last Hello in this process registered (rows of a ``*`` token's
        #: agent must be of that node)
        self.nodes: dict[str, str] = {}

    async def _identify(self, rpc: str, context: grpc.aio.ServicerContext, agent_id: str | None = None):
        """The caller's identity (None when callers are not checked); aborts the call when refused."""
        try:
            ident = self.auth.identify(rpc, context.invocation_metadata(), certificate_name(context))
            if agent_id is not None:
                self.auth.check_agent(rpc, ident, agent_id)
            return ident
        except AuthError as exc:
            await context.abort(exc.code, exc.message)

    async def _hello_node(self, ident, request: pb.HelloRequest, context: grpc.aio.ServicerContext) -> str:
        """The node a Hello registers; aborts when the caller may not register it."""
        node = request.hostname or request.agent_id
        try:
            self.auth.check_node("Hello", ident, node)
        except AuthError as exc:
            await context.abort(exc.code, exc.message)
        return node

    def _authorize_table(self, rpc: str, ident, table_name: str) -> None:
        """Raise a Refusal unless the caller's role is the table's writer (checked before decoding)."""
        spec = self.catalogue[table_name] if table_name in self.catalogue else None
        if ident is None or spec is None or spec.writer in ident.roles:
            return  # an unknown table is refused by the payload check, by name
        self.auth.count(rpc, grpc.StatusCode.PERMISSION_DENIED)  # logged as a refused batch
        raise Refusal(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{ident.name!r} may not write table {spec.name!r} (written by the {spec.writer})",
            "refused_table_not_allowed",
        )

    def _required_node(self, ident, agent_id: str, spec) -> str | None:
        """The node every row of the agent's batch must name (None: not checked); Refusal when the
        agent has not registered one."""
        if ident is None or spec.writer != "agent":
            return None
        node = ident.node or self.nodes.get(agent_id)
        if node is None:  # e.g. this ingest process restarted: the agent's reconnect says Hello again
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE,
                f"agent {agent_id!r} has not said Hello to this collector process: reconnect",
                "refused_no_hello",
            )
        return node

    def _authorize_rows(self, rpc: str, ident, agent_id: str, spec, table) -> None:
        """Raise a Refusal unless an agent's rows are all of its own node (its name, or the node its
        Hello registered)."""
        node = self._required_node(ident, agent_id, spec)
        if node is None:
            return
        column = table.column("node")
        if column.null_count or not pc.all(pc.equal(column, node), min_count=0).as_py():
            self.auth.count(rpc, grpc.StatusCode.PERMISSION_DENIED)
            raise Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"agent {agent_id!r} may write rows of node {node!r} only",
                "refused_other_node",
            )

    def _admit(
        self,
        rpc: str,
        batch: pb.Batch,
        ident,
        tally: Counter[str],
        stream: StreamState | None = None,
        received_us: int | None = None,
    ) -> PendingBatch | Refusal | AuthError:
        """Check one received batch: a PendingBatch to commit, a Refusal to ack, or an AuthError to abort on.

        Counters go to ``tally``, which the caller adds to the metrics once per message. Whatever
        goes wrong while checking one batch refuses that batch only (never the stream).
        ``stream`` is the call that carried it (default: a stream of its own): once one of its
        batches was answered with a retryable error, the rest is held back (answered UNAVAILABLE,
        never committed). ``received_us`` (default: now) is the collector's receive time,
        microseconds since the epoch.
        """
        stream = stream or StreamState()
        payload = batch.arrow_ipc  # each read of a protobuf field costs (bytes: a copy): read once
        agent_id, seq = batch.agent_id, batch.seq
        tally["batches_received"] += 1
        tally["bytes_received"] += len(payload)
        try:
            if agent_id not in self._good_ids:  # first: a bad id must not reach the logs raw
                self._check_agent_id(agent_id)
            try:
                self.auth.check_agent(rpc, ident, agent_id)
            except AuthError as exc:
                return exc
            if stream.failed_seq:
                tally["batches_held"] += 1
                return stream.held(batch)
            if not 1 <= seq <= MAX_SEQ:
                raise Refusal(
                    grpc.StatusCode.INVALID_ARGUMENT, f"batch refused: {seq_problem(seq)}", "refused_header"
                )
            self._authorize_table(rpc, ident, batch.table)
            if received_us is None:
                received_us = time.time_ns() // 1000
            spec = validate.spec_for(
                self.catalogue, batch.table, batch.schema_version, payload, self.cfg.max_batch_bytes
            )
            if self.defer_checks:
                frame = validate.frame_payload(spec, payload, self.limits)
                if frame is not None:
                    node = self._required_node(ident, agent_id, spec)
                    unchecked = Unchecked(
                        payload, frame, node, received_us, received_us + self.max_skew_us, self.limits
                    )
                    return PendingBatch(
                        agent_id,
                        seq,
                        spec,
                        None,
                        stream=stream.id,
                        spool_epoch=batch.spool_epoch,
                        unchecked=unchecked,
                    )
            checked = validate.check_payload_of(spec, payload, self.limits)
            table, span = checked.table, checked.span
            self._authorize_rows(rpc, ident, agent_id, spec, table)
            if checked.newest_us is not None:
                clamped = 0
                if checked.newest_us > received_us + self.max_skew_us:
                    table, clamped = clamp_future(spec, table, received_us + self.max_skew_us, received_us)
                    span = None  # the wire bytes no longer hold these rows
                    tally["rows_clamped_future"] += clamped
                self.clock.observe(
                    agent_id, node_of(table, agent_id), checked.newest_us, received_us, clamped
                )
            parts = None
            if span is not None and self.keep_ipc_parts:
                parts = (payload[: span[0]], memoryview(payload)[span[0] : span[1]])
            return PendingBatch(
                agent_id, seq, spec, table, parts, stream=stream.id, spool_epoch=batch.spool_epoch
            )
        except Refusal as refusal:
            stream.note(batch, refusal)
            return self._refused(batch, refusal, tally)
        except Exception as exc:  # a check that broke on this input: refuse the batch, keep serving
            return self._refused(batch, self._check_failed(batch, exc), tally)

    def _observe_clock(self, batch: pb.Batch, result: CommitResult, received_us: int, tally) -> None:
        """Note the clock figures of a batch whose values were checked in the writer."""
        if result.clock is None or result.clock[0] is None:
            return
        newest_us, clamped, node = result.clock
        self.clock.observe(batch.agent_id, node, newest_us, received_us, clamped)
        if clamped:
            tally["rows_clamped_future"] += clamped

    def _check_agent_id(self, agent_id: str) -> None:
        """Raise a Refusal for an agent id that breaks the rules; remember one that follows them."""
        problem = agent_id_problem(agent_id)
        if problem:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"batch refused: {problem}", "refused_header")
        if len(self._good_ids) >= 65536:
            self._good_ids.clear()
        self._good_ids.add(agent_id)

    def _check_failed(self, batch: pb.Batch, exc: Exception) -> Refusal:
        """Log a check that broke on this batch (its words escaped and cut short) and refuse it."""
        error = f"{type(exc).__name__}: {exc}"
        log.error(
            "batch check failed agent=%s seq=%d table=%s error=%s\n%s",
            _loggable(batch.agent_id, agent_id_problem),
            batch.seq,
            _loggable(batch.table, self._table_problem),
            shown(error, 300),  # the exception may quote the hostile input: escaped, cut short
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        return Refusal(
            grpc.StatusCode.INVALID_ARGUMENT, f"batch could not be checked ({error})", "refused_check_failed"
        )

    def _refused(self, batch: pb.Batch, refusal: Refusal, tally: Counter[str]) -> Refusal:
        """Count and log one refused batch."""
        tally["batches_retry" if refusal.retryable else "batches_refused"] += 1
        tally[refusal.counter] += 1
        log.warning(
            "batch refused agent=%s seq=%d table=%s reason=%s",
            _loggable(batch.agent_id, agent_id_problem),
            batch.seq,
            _loggable(batch.table, self._table_problem),
            refusal.message,
        )
        return refusal

    def _table_problem(self, table: str) -> str | None:
        return None if table in self.catalogue else "unknown table"

    def _record_clock(self) -> None:
        """Store the agents' finished clock intervals as agent_clock rows (checked at most once a second)."""
        now = time.monotonic()
        if now < self._clock_next_s:
            return
        self._clock_next_s = now + min(1.0, self.cfg.clock_skew_interval_s)
        rows = self.clock.due(now)
        if not rows:
            return
        for r in rows:
            if r["rows_clamped"]:
                log.warning(
                    "rows dated ahead of the collector clamped agent=%s node=%s rows=%d skew_s=%.1f max_clock_skew_s=%g",
                    r["agent_id"],
                    _loggable(r["node"], hostname_problem),  # from the rows: not checked
                    r["rows_clamped"],
                    r["skew_s"],
                    self.cfg.max_clock_skew_s,
                )
        done = self.writer.submit_async(PendingBatch.internal(self.catalogue["agent_clock"], rows))
        done.add_done_callback(_log_clock_commit)

    def _ack(self, rpc: str, batch: pb.Batch, outcome: Refusal | CommitResult, tally: Counter[str]) -> pb.Ack:
        """The Ack for one batch once it is refused or its commit is done (counted in ``tally``)."""
        if isinstance(outcome, Refusal):
            agent_id = batch.agent_id if agent_id_problem(batch.agent_id) is None else ""
            return pb.Ack(
                agent_id=agent_id, seq=batch.seq, code=outcome.code.value[0], message=outcome.message
            )
        if outcome.refused:
            tally["batches_refused"] += 1
            if outcome.counter:  # refused by its value checks, in the writer
                tally[outcome.counter] += 1
                if outcome.code == grpc.StatusCode.PERMISSION_DENIED.value[0]:
                    self.auth.count(rpc, grpc.StatusCode.PERMISSION_DENIED)
                log.warning(
                    "batch refused agent=%s seq=%d table=%s reason=%s",
                    batch.agent_id,  # checked when it was received
                    batch.seq,
                    batch.table,
                    outcome.error,
                )
            else:
                tally["refused_at_commit"] += 1
            return pb.Ack(
                agent_id=batch.agent_id,
                seq=batch.seq,
                code=outcome.code or grpc.StatusCode.INVALID_ARGUMENT.value[0],
                message=outcome.error,
            )
        if outcome.error:
            tally["commit_errors"] += 1
            return pb.Ack(
                agent_id=batch.agent_id,
                seq=batch.seq,
                code=grpc.StatusCode.UNAVAILABLE.value[0],
                message=outcome.error,
            )
        if outcome.duplicate:
            tally["batches_duplicate"] += 1
            return pb.Ack(agent_id=batch.agent_id, seq=batch.seq, duplicate=True)
        tally["batches_committed"] += 1
        tally["rows_committed"] += outcome.rows
        return pb.Ack(agent_id=batch.agent_id, seq=batch.seq, rows=outcome.rows)

    async def Push(self, request_iterator, context: grpc.aio.ServicerContext):
        """Validate each batch, hand it to the writer, and ack it once committed (in order)."""
        ident = await self._identify("Push", context)
        stream = StreamState()
        pending: asyncio.Queue = asyncio.Queue(maxsize=512)
        self.metrics.inc("push_streams")

        async def read() -> None:
            try:
                async for batch in request_iterator:
                    tally: Counter[str] = Counter()
                    received_us = time.time_ns() // 1000
                    outcome = self._admit("Push", batch, ident, tally, stream, received_us)
                    self.metrics.add(tally)
                    self._record_clock()
                    if isinstance(outcome, PendingBatch):
                        outcome = self.writer.submit_async(outcome)
                    await pending.put((batch, outcome, received_us))
                    if isinstance(outcome, AuthError):
                        return
            except DecodeError as exc:  # no batch to ack: end the stream, naming why
                await pending.put((None, self._unparsable("Push", exc), 0))
            finally:
                await pending.put(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await pending.get()
                if item is None:
                    break
                batch, outcome, received_us = item
                if isinstance(outcome, AuthError | StreamError):
                    await context.abort(outcome.code, outcome.message)
                if not isinstance(outcome, Refusal):
                    outcome = await outcome
                    stream.note(batch, outcome)
                tally = Counter()
                if isinstance(outcome, CommitResult):
                    self._observe_clock(batch, outcome, received_us, tally)
                ack = self._ack("Push", batch, outcome, tally)
                self.metrics.add(tally)
                yield ack
            await reader  # surfaces a broken stream as an error
        finally:
            reader.cancel()

    async def PushBundle(self, request_iterator, context: grpc.aio.ServicerContext):
        """Push with several batches per message: one writer submission and one AckBundle per bundle.

        Bundles of one stream are committed one after the other (no reader task and queue per
        stream, which cost more than the work at a thousand streams); an agent with a backlog still
        moves up to a whole bundle per commit, and the writer groups the bundles of every stream.
        """
        ident = await self._identify("PushBundle", context)
        stream = StreamState()
        self.metrics.inc("push_streams")
        advised: float | None = None  # the advice this stream's agent was told last
        try:
            async for bundle in self._bundles(request_iterator):
                tally: Counter[str] = Counter(bundles_received=1)
                received_us = time.time_ns() // 1000
                outcomes = [
                    self._admit("PushBundle", b, ident, tally, stream, received_us) for b in bundle.batches
                ]
                self._record_clock()
                denied = next((o for o in outcomes if isinstance(o, AuthError)), None)
                if denied is not None:
                    self.metrics.add(tally)
                    await context.abort(denied.code, denied.message)
                valid = [o for o in outcomes if isinstance(o, PendingBatch)]
                refusals = [o if isinstance(o, Refusal) else None for o in outcomes]
                # the writer is left the only owner of the decoded batches: freeing a bundle's Arrow
                # tables cost the event loop an eighth of its time, the writer's thread waits on DuckDB
                outcomes = None
                committing = self.writer.submit_many_async(valid) if valid else None
                valid = None
                if committing is not None and self.flush_advisor.enabled:
                    # the advice changed while this bundle waits for its commit: tell the agent now, not
                    # with the ack (a backlog delays acks by seconds, and the advice is what ends it)
                    while not committing.done():
                        await asyncio.wait(
                            (committing, self._advice_change()), return_when=asyncio.FIRST_COMPLETED
                        )
                        advice = self.flush_advisor.advice_s()
                        if not committing.done() and advice != advised:
                            advised = advice
                            yield pb.AckBundle(flush_interval_s=advice)
                results = iter(await committing if committing is not None else ())
                resolved = [o if o is not None else next(results) for o in refusals]
                for b, outcome in zip(bundle.batches, resolved, strict=True):
                    stream.note(b, outcome)
                    if outcome.__class__ is CommitResult and outcome.clock is not None:
                        self._observe_clock(b, outcome, received_us, tally)
                acks = [
                    self._ack("PushBundle", b, o, tally)
                    for b, o in zip(bundle.batches, resolved, strict=True)
                ]
                self.metrics.add(tally)
                advised = self._flush_advice(received_us)
                yield pb.AckBundle(acks=acks, flush_interval_s=advised)
        except StreamError as exc:
            await context.abort(exc.code, exc.message)

    def hello_flush_advice(self) -> float:
        """The flush interval to advise an agent saying Hello (0: none)."""
        return self.flush_advisor.advice_s()

    def _flush_advice(self, received_us: int) -> float:
        """Note how long a bundle took from receipt to its acks; the flush interval to advise (0: none)."""
        advisor = self.flush_advisor
        if not advisor.enabled:
            return 0.0
        before = advisor.advice_s()
        advisor.observe((time.time_ns() // 1000 - received_us) / 1e6)
        advice = advisor.advice_s()
        if advice != before and self._advice_changed is not None:
            self._advice_changed.set_result(None)  # streams whose bundles wait for a commit tell their agents
            self._advice_changed = None
        return advice

    def _advice_change(self) -> asyncio.Future:
        """A future of the event loop done at the flush advice's next change."""
        if self._advice_changed is None:
            self._advice_changed = asyncio.get_running_loop().create_future()
        return self._advice_changed

    async def _bundles(self, request_iterator):
        """The stream's bundles; StreamError when one does not parse (no batch of it can be acked)."""
        try:
            async for bundle in request_iterator:
                yield bundle
        except DecodeError as exc:
            raise self._unparsable("PushBundle", exc) from None

    def _unparsable(self, rpc: str, exc: DecodeError) -> StreamError:
        """The end of a stream whose next message does not parse (counted, logged)."""
        self.metrics.inc("streams_unparsable")
        log.warning("stream ended rpc=%s reason=a message does not parse error=%s", rpc, shown(str(exc), 200))
        return StreamError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{rpc}: a message does not parse ({exc}); batches before it were acknowledged",
        )


def _loggable(value: str, problem) -> str:
    """``value`` as it is when ``problem(value)`` finds nothing wrong, else quoted, escaped and cut short."""
    return value if problem(value) is None else shown(value)


def _log_clock_commit(done: asyncio.Future[CommitResult]) -> None:
    """Log an agent_clock batch that could not be stored (the estimates are lost, nothing else)."""
    if done.cancelled():
        return
    exc = done.exception()
    error = str(exc) if exc is not None else done.result().error
    if error:
        log.warning("agent_clock rows not stored error=%s", error)
