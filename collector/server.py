"""The collector's asyncio gRPC server: Hello, Push (ack after commit), Query, Stats, health."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import duckdb
import grpc
import pyarrow as pa
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from c4 import __version__
from c4.arrow_ipc import encode_ipc
from c4.catalogue import Catalogue, load
from c4.collector.auth import Authenticator, AuthError, TokenTable, check_server_security, server_credentials
from c4.collector.readonly import QueryRefused, check_read_only
from c4.collector.store import CommitResult, PendingBatch, Store
from c4.collector.validate import Refusal, validate_batch
from c4.collector.writer import Writer
from c4.config import CollectorConfig
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

log = logging.getLogger("c4.collector")

SERVICE_NAME = "c4.telemetry.v1.Telemetry"
#: Codes an agent should retry later (the batch is kept); any other non-zero code is final.
RETRYABLE_CODES = {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.INTERNAL.value[0]}
QUERY_CHUNK_ROWS = 65536


class Metrics:
    """The collector's own counters (thread-safe)."""

    def __init__(self) -> None:
        self._c: Counter[str] = Counter()
        self._lock = threading.Lock()

    def inc(self, name: str, n: int = 1) -> None:
        """Add n to a counter."""
        with self._lock:
            self._c[name] += n

    def add(self, counts: Counter[str]) -> None:
        """Add several counters at once (one lock for a whole bundle)."""
        with self._lock:
            self._c.update(counts)

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._c)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class TelemetryService(pb_grpc.TelemetryServicer):
    """Implements the wire contract over one Store."""

    def __init__(
        self,
        cfg: CollectorConfig,
        store: Store,
        writer: Writer,
        metrics: Metrics,
        auth: Authenticator | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.writer = writer
        self.metrics = metrics
        self.auth = auth or Authenticator(None, metrics.inc)
        self.catalogue: Catalogue = store.catalogue
        self.node = socket.gethostname()
        self.query_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="c4-query")
        self.fault_updater = (
            None  # set by the Collector: async (fault_id, state, by, note) -> (previous, row)
        )

    def _internal_batch(self, table: str, rows: list[dict]) -> PendingBatch:
        spec = self.catalogue[table]
        return PendingBatch("", 0, spec, pa.Table.from_pylist(rows, schema=spec.arrow_schema))

    async def _identify(self, rpc: str, context: grpc.aio.ServicerContext, agent_id: str | None = None):
        """The caller's identity (None without a tokens file); aborts the call when refused."""
        try:
            ident = self.auth.identify(rpc, context.invocation_metadata())
            if agent_id is not None:
                self.auth.check_agent(rpc, ident, agent_id)
            return ident
        except AuthError as exc:
            await context.abort(exc.code, exc.message)

    async def Hello(self, request: pb.HelloRequest, context: grpc.aio.ServicerContext) -> pb.HelloReply:
        """Record the node inventory and tell the agent where its committed sequence stands."""
        await self._identify("Hello", context, request.agent_id)
        if not request.agent_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Hello: agent_id is empty")
        for table, version in request.table_versions.items():
            if table in self.catalogue and self.catalogue[table].version != version:
                log.warning(
                    "agent schema differs agent=%s table=%s agent_version=%d collector_version=%d",
                    request.agent_id,
                    table,
                    version,
                    self.catalogue[table].version,
                )
        row = {
            "ts": _now(),
            "node": request.hostname or request.agent_id,
            "job": request.job,
            "agent_id": request.agent_id,
            "agent_version": request.agent_version,
            "gpu_count": len(request.gpus),
            "nic_port_count": len(request.nics),
            "gpus_json": json.dumps([_msg_dict(g) for g in request.gpus]),
            "nics_json": json.dumps([_msg_dict(n) for n in request.nics]),
            "labels_json": json.dumps(dict(request.labels), sort_keys=True),
        }
        result = await self.writer.submit_async(self._internal_batch("nodes", [row]))
        if result.error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"Hello: could not record node: {result.error}")
        self.metrics.inc("hellos")
        log.info(
            "agent registered agent=%s node=%s gpus=%d nics=%d",
            request.agent_id,
            row["node"],
            len(request.gpus),
            len(request.nics),
        )
        # off the event loop: a lake store may look the agent up across every shard's table
        last_seq = await asyncio.get_running_loop().run_in_executor(
            None, self.store.known_seq, request.agent_id
        )
        return pb.HelloReply(
            last_committed_seq=last_seq,
            collector_version=__version__,
            max_batch_bytes=self.cfg.max_batch_bytes,
        )

    def _admit(
        self, rpc: str, batch: pb.Batch, ident, tally: Counter[str]
    ) -> PendingBatch | Refusal | AuthError:
        """Check one received batch: a PendingBatch to commit, a Refusal to ack, or an AuthError to abort on.

        Counters go to ``tally``, which the caller adds to the metrics once per message.
        """
        tally["batches_received"] += 1
        tally["bytes_received"] += len(batch.arrow_ipc)
        try:
            self.auth.check_agent(rpc, ident, batch.agent_id)
        except AuthError as exc:
            return exc
        try:
            if not batch.agent_id or batch.seq == 0:
                raise Refusal(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "batch needs a non-empty agent_id and a seq >= 1",
                    "refused_header",
                )
            spec, table = validate_batch(
                self.catalogue, batch.table, batch.schema_version, batch.arrow_ipc, self.cfg.max_batch_bytes
            )
            return PendingBatch(batch.agent_id, batch.seq, spec, table)
        except Refusal as refusal:
            tally["batches_refused"] += 1
            tally[refusal.counter] += 1
            log.warning(
                "batch refused agent=%s seq=%d table=%s reason=%s",
                batch.agent_id,
                batch.seq,
                batch.table,
                refusal.message,
            )
            return refusal

    def _ack(self, batch: pb.Batch, outcome: Refusal | CommitResult, tally: Counter[str]) -> pb.Ack:
        """The Ack for one batch once it is refused or its commit is done (counted in ``tally``)."""
        if isinstance(outcome, Refusal):
            return pb.Ack(
                agent_id=batch.agent_id, seq=batch.seq, code=outcome.code.value[0], message=outcome.message
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
        pending: asyncio.Queue = asyncio.Queue(maxsize=512)
        self.metrics.inc("push_streams")

        async def read() -> None:
            try:
                async for batch in request_iterator:
                    tally: Counter[str] = Counter()
                    outcome = self._admit("Push", batch, ident, tally)
                    self.metrics.add(tally)
                    if isinstance(outcome, PendingBatch):
                        outcome = self.writer.submit_async(outcome)
                    await pending.put((batch, outcome))
                    if isinstance(outcome, AuthError):
                        return
            finally:
                await pending.put(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await pending.get()
                if item is None:
                    break
                batch, outcome = item
                if isinstance(outcome, AuthError):
                    await context.abort(outcome.code, outcome.message)
                if not isinstance(outcome, Refusal):
                    outcome = await outcome
                tally = Counter()
                ack = self._ack(batch, outcome, tally)
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
        self.metrics.inc("push_streams")
        async for bundle in request_iterator:
            tally: Counter[str] = Counter(bundles_received=1)
            outcomes = [self._admit("PushBundle", b, ident, tally) for b in bundle.batches]
            denied = next((o for o in outcomes if isinstance(o, AuthError)), None)
            if denied is not None:
                self.metrics.add(tally)
                await context.abort(denied.code, denied.message)
            valid = [o for o in outcomes if isinstance(o, PendingBatch)]
            results = iter(await self.writer.submit_many_async(valid) if valid else ())
            acks = [
                self._ack(b, o if isinstance(o, Refusal) else next(results), tally)
                for b, o in zip(bundle.batches, outcomes, strict=True)
            ]
            self.metrics.add(tally)
            yield pb.AckBundle(acks=acks)

    async def Query(self, request: pb.QueryRequest, context: grpc.aio.ServicerContext):
        """Run one read-only statement in a worker thread and stream Arrow IPC chunks."""
        await self._identify("Query", context)
        self.metrics.inc("queries")
        try:
            check_read_only(request.sql)
        except QueryRefused as exc:
            self.metrics.inc("queries_refused")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        max_rows = min(request.max_rows or self.cfg.query_max_rows, self.cfg.query_max_rows)
        timeout_s = min(request.timeout_s or self.cfg.query_timeout_s, self.cfg.query_timeout_s)
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(chunks.put_nowait, item)

        def work() -> None:
            cur = self.store.cursor()
            timer = threading.Timer(timeout_s, cur.interrupt)
            timer.start()
            started = time.monotonic()
            try:
                cur.execute(request.sql)
                reader = cur.fetch_record_batch(QUERY_CHUNK_ROWS)
                sent, emitted = 0, False
                for rb in reader:
                    if cancelled.is_set():
                        return
                    truncated = sent + rb.num_rows > max_rows
                    if truncated:
                        rb = rb.slice(0, max_rows - sent)
                    sent += rb.num_rows
                    put(pb.QueryChunk(arrow_ipc=encode_ipc(rb), truncated=truncated))
                    emitted = True
                    if truncated:
                        break
                if not emitted:
                    put(pb.QueryChunk(arrow_ipc=encode_ipc(reader.schema.empty_table())))
                put(None)
            except duckdb.InterruptException:
                put((grpc.StatusCode.DEADLINE_EXCEEDED, f"query timed out after {timeout_s:g} s"))
            except duckdb.Error as exc:
                elapsed = time.monotonic() - started
                if elapsed >= timeout_s:
                    put((grpc.StatusCode.DEADLINE_EXCEEDED, f"query timed out after {timeout_s:g} s"))
                else:
                    put((grpc.StatusCode.INVALID_ARGUMENT, f"query failed: {exc}"))
            except Exception as exc:  # never let one query take the server down
                log.exception("query crashed")
                put((grpc.StatusCode.INTERNAL, f"query failed: {exc}"))
            finally:
                timer.cancel()
                cur.close()

        loop.run_in_executor(self.query_pool, work)
        try:
            while True:
                item = await chunks.get()
                if item is None:
                    return
                if isinstance(item, tuple):
                    self.metrics.inc("queries_failed")
                    await context.abort(item[0], item[1])
                yield item
        finally:
            cancelled.set()

    async def Stats(self, request: pb.StatsRequest, context: grpc.aio.ServicerContext) -> pb.StatsReply:
        """The collector's own counters."""
        await self._identify("Stats", context)
        return pb.StatsReply(counters={**self.metrics.snapshot(), "commit_transactions": self.writer.commits})

    async def UpdateFault(
        self, request: pb.FaultUpdate, context: grpc.aio.ServicerContext
    ) -> pb.FaultUpdateReply:
        """An operator acknowledges or resolves a fault: stored as a new faults row and logged as an action."""
        from c4.analytics.lifecycle import FaultStateError

        await self._identify("UpdateFault", context)
        self.metrics.inc("fault_updates")
        if self.fault_updater is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "collector is not ready")
        try:
            prev, row = await self.fault_updater(request.fault_id, request.state, request.by, request.note)
        except FaultStateError as exc:
            self.metrics.inc("fault_updates_refused")
            code = {
                "invalid": grpc.StatusCode.INVALID_ARGUMENT,
                "not_found": grpc.StatusCode.NOT_FOUND,
            }.get(exc.reason, grpc.StatusCode.FAILED_PRECONDITION)
            await context.abort(code, str(exc))
        log.info(
            "fault state set fault_id=%s state=%s by=%s", request.fault_id, row["state"], request.by or "-"
        )
        return pb.FaultUpdateReply(fault_id=request.fault_id, previous_state=prev, state=row["state"])


def _msg_dict(msg) -> dict:
    return {f.name: getattr(msg, f.name) for f in msg.DESCRIPTOR.fields}


class Collector:
    """A running collector: store, writer thread, gRPC server and maintenance tasks."""

    def __init__(self, cfg: CollectorConfig, catalogue: Catalogue | None = None) -> None:
        self.cfg = cfg
        self.security_warnings = check_server_security(cfg)  # before touching the store: fail fast
        self.metrics = Metrics()
        tokens = TokenTable.load(cfg.tokens_file) if cfg.tokens_file else None
        self.credentials = (
            server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca) if cfg.tls_cert else None
        )
        if cfg.lake:
            from c4.collector.lake import LakeStore

            shard = cfg.shard or f"{socket.gethostname()}_{cfg.listen.rpartition(':')[2]}"
            self.store: Store = LakeStore(cfg.lake, cfg.lake_data_path, catalogue or load(), shard)
        else:
            self.store = Store(cfg.db, catalogue or load(), cfg.checkpoint_wal_bytes)
        self.writer = Writer(self.store, cfg.group_commit_max_batches)
        self.auth = Authenticator(tokens, self.metrics.inc)
        self.service = TelemetryService(cfg, self.store, self.writer, self.metrics, self.auth)
        self.exporter = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._tasks: list[asyncio.Task] = []
        self.diagnosis = None
        self.notifier = self.isolation = None
        self.service.fault_updater = self.update_fault

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        limit = self.cfg.max_batch_bytes * 4 + (1 << 20)
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", 64 << 20),
                # gRPC cancels a call its server has not picked up within 30 s; with a busy event loop
                # (a thousand agents reconnecting at once) give it as long as the agents' Hello timeout
                ("grpc.server_max_unrequested_time_in_server", 120),
            ]
        )
        pb_grpc.add_TelemetryServicer_to_server(self.service, self.server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        if self.credentials is not None:
            self.port = self.server.add_secure_port(self.cfg.listen, self.credentials)
        else:
            self.port = self.server.add_insecure_port(self.cfg.listen)
        if not self.port:
            raise OSError(f"cannot listen on {self.cfg.listen}")
        for warning in self.security_warnings:
            log.warning("security: %s listen=%s", warning, self.cfg.listen)
        await self.server.start()
        if self.cfg.metrics_listen:
            from c4.collector.exporter import MetricsServer

            self.exporter = MetricsServer(self, self.cfg.metrics_listen)
            self.exporter.start()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._tasks = [
            asyncio.create_task(self._every(self.cfg.retention_interval_s, self.retain)),
            asyncio.create_task(self._every(self.cfg.metrics_interval_s, self.snapshot_metrics)),
        ]
        if self.cfg.diagnose_interval_s > 0:
            from c4.analytics.runner import DiagnosisRunner

            self.diagnosis = DiagnosisRunner(self.store.catalogue, self.cfg.diagnose_window_s)
            if self.cfg.fabric_topology:
                from c4.analytics.fabric import capacities_from_topology

                self.diagnosis.capacity_gbps = capacities_from_topology(self.cfg.fabric_topology)
            self.notifier, self.isolation = self._actions()
            cur = self.store.cursor()
            try:
                self.diagnosis.resume(cur)
            finally:
                cur.close()
            self._tasks.append(asyncio.create_task(self._every(self.cfg.diagnose_interval_s, self.diagnose)))
        log.info(
            "collector serving listen=%s port=%d store=%s tls=%s mtls=%s tokens=%d metrics=%s",
            self.cfg.listen,
            self.port,
            f"lake {self.cfg.lake} shard {self.store.shard}" if self.cfg.lake else self.cfg.db,
            self.credentials is not None,
            bool(self.cfg.tls_client_ca),
            len(self.auth.tokens or ()),
            self.exporter.url if self.exporter else "off",
        )
        return self.port

    async def _every(self, period_s: float, fn) -> None:
        while True:
            await asyncio.sleep(period_s)
            try:
                await fn()
            except Exception:
                log.exception("periodic job failed job=%s", fn.__name__)

    async def retain(self) -> dict[str, int]:
        """Drop rows older than the retention age."""
        cutoff_dt = _now() - timedelta(seconds=self.cfg.retention_s)
        cutoff = f"TIMESTAMP '{cutoff_dt.isoformat(sep=' ')}'"
        deleted = await self.writer.call_async(lambda store: store.delete_older_than(cutoff))
        if isinstance(deleted, dict) and deleted:
            log.info("retention deleted %s", " ".join(f"{t}={n}" for t, n in deleted.items()))
            self.metrics.inc("retention_rows_deleted", sum(deleted.values()))
        return deleted

    def _actions(self):
        """Alert sinks and the isolation hook from the config (None when not configured)."""
        from c4.analytics.actions import AlertmanagerSink, IsolationHook, Notifier, SlackSink, WebhookSink

        sinks = [WebhookSink(u) for u in self.cfg.alert_webhook_urls]
        if self.cfg.alertmanager_url:
            sinks.append(AlertmanagerSink(self.cfg.alertmanager_url))
        if self.cfg.slack_webhook_url:
            sinks.append(SlackSink(self.cfg.slack_webhook_url))
        hook = (
            IsolationHook(self.cfg.isolation_command, self.cfg.isolation_dry_run)
            if self.cfg.isolation_command
            else None
        )
        return (Notifier(sinks) if sinks else None), hook

    async def diagnose(self) -> None:
        """Run C4D over the recent window (in a worker thread) and store the faults it found."""
        loop = asyncio.get_running_loop()

        def work():
            cur = self.store.cursor()
            try:
                return self.diagnosis.run_once(cur)
            finally:
                cur.close()

        table = await loop.run_in_executor(self.service.query_pool, work)
        if table.num_rows:
            await self._store_faults(table.to_pylist())

    async def _store_faults(self, faults: list[dict], extra_actions: list[dict] | None = None) -> None:
        """Append faults rows, then alert and isolate (off the event loop) and log every action."""
        loop = asyncio.get_running_loop()
        spec = self.store.catalogue["faults"]
        await self.writer.submit_async(
            PendingBatch("", 0, spec, pa.Table.from_pylist(faults, schema=spec.arrow_schema))
        )
        self.metrics.inc("fault_rows_written", len(faults))

        def act():  # network and commands off the event loop
            rows = list(extra_actions or [])
            if self.notifier is not None:
                rows += self.notifier.notify(faults)
            if self.isolation is not None:
                rows += self.isolation.apply(faults)
            return rows

        actions = await loop.run_in_executor(self.service.query_pool, act)
        if actions:
            spec = self.store.catalogue["actions"]
            await self.writer.submit_async(
                PendingBatch("", 0, spec, pa.Table.from_pylist(actions, schema=spec.arrow_schema))
            )

    async def update_fault(self, fault_id: str, state: str, by: str, note: str) -> tuple[str, dict]:
        """Apply an operator's acknowledge/resolve; returns (previous state, the new faults row)."""
        from c4.analytics.lifecycle import FaultBook

        loop = asyncio.get_running_loop()

        def work():
            cur = self.store.cursor()
            try:
                found = (
                    cur.execute(
                        "SELECT * FROM faults WHERE fault_id = ? ORDER BY ts DESC LIMIT 1", [fault_id]
                    )
                    .fetch_arrow_table()
                    .to_pylist()
                )
            finally:
                cur.close()
            latest = found[0] if found else None
            if self.diagnosis is not None:
                with self.diagnosis.lock:
                    prev = (self.diagnosis.book.open.get(fault_id) or latest or {}).get("state", "")
                    return prev, self.diagnosis.book.set_state(fault_id, state, _now(), latest)
            return (latest or {}).get("state", ""), FaultBook().set_state(fault_id, state, _now(), latest)

        prev, row = await loop.run_in_executor(self.service.query_pool, work)
        logged = {
            "ts": _now(),
            "node": row["node"],
            "job": row.get("job") or "",
            "fault_id": fault_id,
            "sink": "operator",
            "target": by or "unknown",
            "fault_state": state,
            "outcome": "recorded",
            "attempts": 1,
            "detail": note[:500],
        }
        await self._store_faults([row], [logged])
        return prev, row

    async def snapshot_metrics(self) -> None:
        """Write the counters into the collector_metrics table."""
        ts = _now()
        rows = [
            {"ts": ts, "node": self.service.node, "job": "", "metric": k, "value": v}
            for k, v in sorted(self.metrics.snapshot().items())
        ]
        if rows:
            await self.writer.submit_async(self.service._internal_batch("collector_metrics", rows))

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop serving, finish queued commits, checkpoint and close the file."""
        for t in self._tasks:
            t.cancel()
        if self.exporter is not None:
            self.exporter.stop()
        if self.server is not None:
            await self.server.stop(grace_s)
        await asyncio.get_running_loop().run_in_executor(None, self.writer.close)
        self.store.close()
        self.service.query_pool.shutdown(wait=False, cancel_futures=True)
        log.info("collector stopped")


async def serve(cfg: CollectorConfig, ready: asyncio.Event | None = None) -> None:
    """Run a collector until cancelled or signalled."""
    import signal

    collector = Collector(cfg)
    await collector.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await collector.stop()
