"""The collector's asyncio gRPC server: Hello, Push (ack after commit), Query, Stats, health."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import duckdb
import grpc
import pyarrow as pa

from c4 import __version__
from c4.catalogue import Catalogue, load
from c4.collector.auth import (
    Authenticator,
    AuthError,
    TokenTable,
    check_server_security,
    mtls_roles_of,
    server_credentials,
)
from c4.collector.grouping import GroupError, decode_group, reply_for
from c4.collector.ingest import IngestService, Metrics, agent_server, bind, set_serving
from c4.collector.ingest_processes import IngestProcesses
from c4.collector.queries import QueryFailed, QueryRunner
from c4.collector.store import PendingBatch, Store
from c4.collector.tasks import TaskHealth, run_every
from c4.collector.validate import hello_problem
from c4.collector.writer import Writer
from c4.config import CollectorConfig
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

log = logging.getLogger("c4.collector")

#: Codes an agent should retry later (the batch is kept); any other non-zero code is final.
RETRYABLE_CODES = {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.INTERNAL.value[0]}


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class StartupError(RuntimeError):
    """The collector cannot start; the message names the path or address and the problem."""


class TelemetryService(IngestService):
    """Implements the wire contract over one Store: Hello, Query, Stats, UpdateFault beside ingest."""

    def __init__(
        self,
        cfg: CollectorConfig,
        store: Store,
        writer: Writer,
        metrics: Metrics,
        auth: Authenticator | None = None,
    ) -> None:
        super().__init__(cfg, store.catalogue, writer, metrics, auth)
        self.store = store
        self.node = socket.gethostname()
        # the diagnosis, fault updates and alert actions; readers' queries have their own threads
        self.query_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="c4-work")
        self.queries = QueryRunner(
            store, metrics, cfg.query_max_running, cfg.query_max_queued, cfg.query_memory_bytes
        )
        self.fault_updater = (
            None  # set by the Collector: async (fault_id, state, by, note) -> (previous, row)
        )

    def _internal_batch(self, table: str, rows: list[dict]) -> PendingBatch:
        spec = self.catalogue[table]
        return PendingBatch("", 0, spec, pa.Table.from_pylist(rows, schema=spec.arrow_schema))

    async def Hello(self, request: pb.HelloRequest, context: grpc.aio.ServicerContext) -> pb.HelloReply:
        """Record the node inventory and tell the agent where its committed sequence stands."""
        ident = await self._identify("Hello", context)
        problem = hello_problem(request)  # before anything logs the agent's strings
        if problem:
            self.metrics.inc("hellos_refused")
            log.warning("Hello refused reason=%s", problem)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Hello: {problem}")
        try:
            self.auth.check_agent("Hello", ident, request.agent_id)
        except AuthError as exc:
            await context.abort(exc.code, exc.message)
        node = await self._hello_node(ident, request, context)
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
            "node": node,
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
        self.nodes[request.agent_id] = node
        self.metrics.inc("hellos")
        log.info(
            "agent registered agent=%s node=%s gpus=%d nics=%d",
            request.agent_id,
            row["node"],
            len(request.gpus),
            len(request.nics),
        )
        # off the event loop: a lake store may look the agent up across every shard's table, and a
        # new spool epoch is recorded before the agent sends anything under it
        try:
            last_seq = await asyncio.get_running_loop().run_in_executor(
                None, self.store.open_agent, request.agent_id, request.spool_epoch
            )
        except Exception as exc:
            log.error("Hello failed agent=%s error=%s", request.agent_id, exc)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"Hello: could not record the agent's sequence: {exc}"
            )
        return pb.HelloReply(
            last_committed_seq=last_seq,
            collector_version=__version__,
            max_batch_bytes=self.cfg.max_batch_bytes,
        )

    async def Query(self, request: pb.QueryRequest, context: grpc.aio.ServicerContext):
        """Run one read-only statement on the query threads and stream Arrow IPC chunks."""
        await self._identify("Query", context)
        self.metrics.inc("queries")
        max_rows = min(request.max_rows or self.cfg.query_max_rows, self.cfg.query_max_rows)
        timeout_s = min(request.timeout_s or self.cfg.query_timeout_s, self.cfg.query_timeout_s)
        try:
            async for chunk in self.queries.run(request.sql, max_rows, timeout_s):
                yield chunk
        except QueryFailed as exc:
            await context.abort(exc.code, exc.message)

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


class StoreIngestService(pb_grpc.IngestServicer):
    """The store process's side of the private socket: commits ingest processes' groups."""

    def __init__(self, catalogue: Catalogue, writer: Writer, metrics: Metrics) -> None:
        self.catalogue = catalogue
        self.writer = writer
        self.metrics = metrics

    async def Commit(self, request: pb.CommitGroup, context: grpc.aio.ServicerContext) -> pb.CommitReply:
        """Commit one group of validated batches; one result per entry, in order."""
        if request.counters:
            self.metrics.add(dict(request.counters))
        if not request.entries:
            return pb.CommitReply()
        try:
            batches = decode_group(request, self.catalogue)
        except GroupError as exc:
            log.error("ingest group refused error=%s", exc)
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))
        return reply_for(await self.writer.submit_many_async(batches))


def _reason(exc: BaseException) -> str:
    """An OS or DuckDB error as one line: the OS's words and file when it has them."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc).replace("\n", " ")


def _msg_dict(msg) -> dict:
    return {f.name: getattr(msg, f.name) for f in msg.DESCRIPTOR.fields}


class Collector:
    """A running collector: store, writer thread, gRPC server and maintenance tasks."""

    def __init__(self, cfg: CollectorConfig, catalogue: Catalogue | None = None) -> None:
        self.cfg = cfg
        self.security_warnings = check_server_security(cfg)  # before touching the store: fail fast
        self.metrics = Metrics()
        tokens = TokenTable.load(cfg.tokens_file) if cfg.tokens_file else None
        mtls_roles = mtls_roles_of(cfg)
        self.credentials = (
            server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca) if cfg.tls_cert else None
        )
        if cfg.lake:
            from c4.collector.lake import LakeStore

            shard = cfg.shard or f"{socket.gethostname()}_{cfg.listen.rpartition(':')[2]}"
            self.store: Store = LakeStore(
                cfg.lake,
                cfg.lake_data_path,
                catalogue or load(),
                shard,
                cfg.store_threads,
                query_memory_bytes=cfg.query_memory_bytes,
            )
        else:
            try:
                self.store = Store(
                    cfg.db,
                    catalogue or load(),
                    cfg.checkpoint_wal_bytes,
                    cfg.store_threads,
                )
            except (duckdb.Error, OSError) as exc:  # full disk, read-only or missing directory, not a DB
                raise StartupError(f"cannot open the store {cfg.db}: {_reason(exc)}") from exc
        self.writer = Writer(self.store, cfg.group_commit_max_batches)
        self.auth = Authenticator(tokens, self.metrics.inc, mtls_roles)
        self.service = TelemetryService(cfg, self.store, self.writer, self.metrics, self.auth)
        self.exporter = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.ingest_processes: IngestProcesses | None = None  # when cfg.ingest_processes > 0
        self._private_dir: str | None = None
        self._tasks: list[asyncio.Task] = []
        self.tasks: dict[str, TaskHealth] = {}  # periodic task name -> its health (/metrics, collector_tasks)
        self.diagnosis = None
        self.notifier = self.isolation = None
        self.service.fault_updater = self.update_fault

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        self.server, health_servicer = agent_server(self.cfg)
        pb_grpc.add_TelemetryServicer_to_server(self.service, self.server)
        if self.cfg.ingest_processes:
            # agents reach the ingest processes; this process serves them on a private socket only
            import tempfile

            pb_grpc.add_IngestServicer_to_server(
                StoreIngestService(self.store.catalogue, self.writer, self.metrics), self.server
            )
            self._private_dir = tempfile.mkdtemp(prefix="c4-collector-")  # mode 0700: this user only
            store_address = f"unix:{self._private_dir}/store.sock"
            bind(self.server, store_address, None)
        else:
            try:
                self.port = bind(self.server, self.cfg.listen, self.credentials)
            except (RuntimeError, OSError) as exc:
                raise StartupError(
                    f"cannot listen on {self.cfg.listen}: the address is in use or not this host's"
                ) from exc
        for warning in self.security_warnings:
            log.warning("security: %s listen=%s", warning, self.cfg.listen)
        await self.server.start()
        if self.cfg.ingest_processes:
            self.ingest_processes = IngestProcesses(
                self.cfg,
                self.cfg.ingest_processes,
                store_address,
                logging.getLevelName(log.getEffectiveLevel()),
            )
            self.port = await self.ingest_processes.start()
        if self.cfg.metrics_listen:
            from c4.collector.exporter import MetricsServer

            self.exporter = MetricsServer(self, self.cfg.metrics_listen)
            try:
                self.exporter.start()
            except OSError as exc:
                raise StartupError(
                    f"cannot serve /metrics on {self.cfg.metrics_listen}: {_reason(exc)}"
                ) from exc
        await set_serving(health_servicer)
        self._tasks = [
            asyncio.create_task(self._every(self.cfg.retention_interval_s, self.retain, "retention")),
            asyncio.create_task(
                self._every(self.cfg.metrics_interval_s, self.snapshot_metrics, "metrics_snapshot")
            ),
        ]
        if self.cfg.diagnose_interval_s > 0:
            from c4.analytics.runner import DiagnosisRunner

            self.diagnosis = DiagnosisRunner(
                self.store.catalogue, self.cfg.diagnose_window_s, max_skew_s=self.cfg.max_clock_skew_s
            )
            if self.cfg.fabric_topology:
                from c4.analytics.fabric import capacities_from_topology

                self.diagnosis.capacity_gbps = capacities_from_topology(self.cfg.fabric_topology)
            self.notifier, self.isolation = self._actions()
            cur = self.store.cursor()
            try:
                self.diagnosis.resume(cur)
            finally:
                cur.close()
            self._tasks.append(
                asyncio.create_task(self._every(self.cfg.diagnose_interval_s, self.diagnose, "diagnosis"))
            )
        log.info(
            "collector serving listen=%s port=%d ingest_processes=%d store=%s tls=%s mtls=%s tokens=%d metrics=%s",
            self.cfg.listen,
            self.port,
            self.cfg.ingest_processes,
            f"lake {self.cfg.lake} shard {self.store.shard}" if self.cfg.lake else self.cfg.db,
            self.credentials is not None,
            bool(self.cfg.tls_client_ca),
            len(self.auth.tokens or ()),
            self.exporter.url if self.exporter else "off",
        )
        return self.port

    async def _every(self, period_s: float, fn, name: str | None = None) -> None:
        """Run ``fn`` every ``period_s`` until cancelled: failures are logged, counted and retried with backoff."""
        health = self.tasks.setdefault(name or fn.__name__, TaskHealth(name or fn.__name__, period_s))
        await run_every(health, fn, self.metrics.inc)

    async def retain(self) -> dict[str, int]:
        """Drop rows older than the retention age, and rows dated beyond the allowed clock skew."""
        now = _now()

        def stamp(dt: datetime) -> str:
            return f"TIMESTAMP '{dt.isoformat(sep=' ')}'"

        cutoff = stamp(now - timedelta(seconds=self.cfg.retention_s))
        # a row further ahead than the skew never counts as "now" (ingest clamps such rows; an older
        # version stored them as sent, up to int64 max, which would otherwise never age out)
        ahead = stamp(now + timedelta(seconds=self.cfg.max_clock_skew_s))
        result = await self.writer.call_async(
            lambda store: (store.delete_older_than(cutoff), store.delete_newer_than(ahead))
        )
        if isinstance(result, BaseException):  # the writer hands a job's exception back
            raise result
        deleted, future = result
        if deleted:
            log.info("retention deleted %s", " ".join(f"{t}={n}" for t, n in deleted.items()))
            self.metrics.inc("retention_rows_deleted", sum(deleted.values()))
        if future:
            log.warning(
                "retention deleted rows dated ahead of the collector's clock by more than "
                "max_clock_skew_s=%g: %s",
                self.cfg.max_clock_skew_s,
                " ".join(f"{t}={n}" for t, n in future.items()),
            )
            self.metrics.inc("retention_future_rows_deleted", sum(future.values()))
        return {t: deleted.get(t, 0) + future.get(t, 0) for t in {**deleted, **future}}

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
        stored = await self.writer.submit_async(
            PendingBatch("", 0, spec, pa.Table.from_pylist(faults, schema=spec.arrow_schema))
        )
        if stored.error:
            raise RuntimeError(f"could not store {len(faults)} faults rows: {stored.error}")
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
        """Write the counters into collector_metrics and the periodic tasks' health into collector_tasks."""
        ts = _now()
        values = dict(self.metrics.snapshot())
        for name, health in self.tasks.items():  # health gauges beside the task_runs/task_failures counters
            values[f"task_consecutive_failures:{name}"] = health.consecutive_failures
            last = health.last_success
            values[f"task_last_success_unix_s:{name}"] = (
                int(last.replace(tzinfo=UTC).timestamp()) if last else 0
            )
        rows = [
            {"ts": ts, "node": self.service.node, "job": "", "metric": k, "value": v}
            for k, v in sorted(values.items())
        ]
        batches = [self.service._internal_batch("collector_metrics", rows)] if rows else []
        if self.tasks:
            tasks = [h.row(ts, self.service.node) for h in self.tasks.values()]
            batches.append(self.service._internal_batch("collector_tasks", tasks))
        for result in await self.writer.submit_many_async(batches) if batches else []:
            if result.error:
                raise RuntimeError(f"could not store the collector's metrics: {result.error}")

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop serving, finish queued commits, checkpoint and close the file."""
        for t in self._tasks:
            t.cancel()
        if self.exporter is not None:
            self.exporter.stop()
        if self.ingest_processes is not None:  # first: their groups in flight still commit here
            await self.ingest_processes.stop()
        if self.server is not None:
            await self.server.stop(grace_s)
        await asyncio.get_running_loop().run_in_executor(None, self.writer.close)
        self.service.queries.close()
        try:
            self.store.close()
        except duckdb.Error as exc:  # e.g. a full disk: the checkpoint fails, the WAL keeps every commit
            log.error("store not checkpointed on close (its write-ahead log keeps the data) error=%s", exc)
        self.service.query_pool.shutdown(wait=False, cancel_futures=True)
        if self._private_dir is not None:
            import shutil

            shutil.rmtree(self._private_dir, ignore_errors=True)
        log.info("collector stopped")


async def serve(cfg: CollectorConfig, ready: asyncio.Event | None = None) -> None:
    """Run a collector until cancelled or signalled."""
    import signal

    # handlers first: a collector serving through ingest processes answers health checks before
    # its own start() returns, so a SIGTERM may come that early and must still stop it cleanly
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    collector = Collector(cfg)
    try:
        await collector.start()
    except BaseException:
        await collector.stop(0)  # what did start stops: no port, thread or open file left behind
        raise
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await collector.stop()
