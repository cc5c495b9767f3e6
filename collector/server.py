"""The collector's asyncio gRPC server: Hello, Push (ack after commit), Query, Stats, health."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import shutil
import signal
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import duckdb
import grpc

from c4 import __version__
from c4.analytics.lifecycle import FaultStateError
from c4.catalogue import Catalogue, load
from c4.collector import maintenance
from c4.collector.auth import (
    Authenticator,
    AuthError,
    TokenTable,
    check_server_security,
    mtls_roles_of,
    server_credentials,
)
from c4.collector.diagnosis import Diagnosis
from c4.collector.exporter import MetricsServer
from c4.collector.fabric import FabricDiscovery
from c4.collector.grouping import GroupError, decode_group, reply_for
from c4.collector.holds import HoldKeeper, hold_request_problem
from c4.collector.ingest import IngestService, Metrics, agent_server, bind, set_serving
from c4.collector.ingest_processes import IngestProcesses
from c4.collector.lake import LakeStore, conninfo, shown_url
from c4.collector.lease import PostgresLease, shard_served_elsewhere
from c4.collector.queries import QueryFailed, QueryRunner
from c4.collector.replan import Replanner
from c4.collector.rollup import Rollups, rollup_offset_s
from c4.collector.store import PendingBatch, Store
from c4.collector.tasks import LeaderTasks, TaskHealth, run_every
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


def lease_timeout_s(cfg: CollectorConfig) -> float:
    """How long a hung leader keeps the lake's diagnosis lease (lake_lease_timeout_s, else three periods, >= 30 s)."""
    return cfg.lake_lease_timeout_s or max(30.0, 3 * cfg.diagnose_interval_s)


def lease_period_s(cfg: CollectorConfig) -> float:
    """How often a lake collector takes or renews the lease: each diagnosis period, at least three times a timeout."""
    third = lease_timeout_s(cfg) / 3
    return min(cfg.diagnose_interval_s, third) if cfg.diagnose_interval_s > 0 else third


class StartupError(RuntimeError):
    """The collector cannot start; the message names the path or address and the problem."""


class TelemetryService(IngestService):
    """Implements the wire contract over one Store: Hello, Query, Stats, UpdateFault, SetHold and
    ListHolds beside ingest."""

    defer_checks = True  # its writer checks the values, many agents' batches of a table at once

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
        # the collector's name in its own rows (collector_metrics, collector_tasks, holds): on a lake its
        # shard, so that two collectors of one lake on one host keep apart
        self.node = getattr(store, "shard", None) or socket.gethostname()
        # the diagnosis, fault updates and alert actions; readers' queries have their own threads
        self.query_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="c4-work")
        self.queries = QueryRunner(
            store, metrics, cfg.query_max_running, cfg.query_max_queued, cfg.query_memory_bytes
        )
        self.fault_updater = (
            None  # set by the Collector: async (fault_id, state, by, note) -> (previous, row)
        )
        self.holds: HoldKeeper | None = None  # set by the Collector: operators' holds on remediation
        self.resume_held = None  # set by the Collector: async () -> held steps that run after a release

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
        # the agent's spool epoch is recorded in the same commit (else a transaction of its own per Hello)
        opens = ((request.agent_id, request.spool_epoch),) if request.spool_epoch else ()
        nodes = PendingBatch.internal(self.catalogue["nodes"], [row], opens=opens)
        result = await self.writer.submit_async(nodes)
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
            flush_interval_s=self.hello_flush_advice(),
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
        """The collector's own counters, ``writer_busy_ms`` (time its writer spent committing and running
        jobs), and ``side_pending`` (1 while its side file holds acknowledged rows
        taken during a checkpoint that are not moved into the store yet), ``store_invalidated`` (1 while
        DuckDB has invalidated the store and it is not open again), ``store_reopens`` and the background
        ``checkpoint_failures``."""
        await self._identify("Stats", context)
        store = self.writer.store
        checkpointer = getattr(store, "checkpointer", None)
        counters = {
            **self.metrics.snapshot(),
            "commit_transactions": self.writer.commits,
            "writer_busy_ms": int(self.writer.busy_s * 1000),
            "side_pending": int(bool(getattr(store, "side_pending", False))),
            "side_moves": int(getattr(store, "side_moves", 0)),
            "store_invalidated": int(bool(getattr(store, "invalidated", ""))),
            "store_reopens": int(getattr(store, "reopens", 0)),
            "checkpoint_failures": checkpointer.failures if checkpointer is not None else 0,
        }
        return pb.StatsReply(counters=counters)

    async def UpdateFault(
        self, request: pb.FaultUpdate, context: grpc.aio.ServicerContext
    ) -> pb.FaultUpdateReply:
        """An operator acknowledges or resolves a fault: stored as a new faults row and logged as an action."""
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

    async def SetHold(self, request: pb.HoldRequest, context: grpc.aio.ServicerContext) -> pb.HoldReply:
        """An operator holds or releases remediation, cluster-wide or for one job: stored, then in force."""
        ident = await self._identify("SetHold", context)
        self.metrics.inc("hold_requests")
        problem = hold_request_problem(request)  # before anything logs the request's strings
        if problem:
            self.metrics.inc("hold_requests_refused")
            log.warning("SetHold refused reason=%s", problem)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"SetHold: {problem}")
        if self.holds is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "collector is not ready")
        try:
            change = await self.holds.change(request, ident.name if ident else "")
        except RuntimeError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"SetHold: {exc}")
        resumed = 0
        if change.changed and not request.hold and self.resume_held is not None:
            resumed = await self.resume_held()
        log.info(
            "remediation hold scope=%s job=%s hold=%s changed=%s by=%s resumed_steps=%d",
            request.scope,
            request.job or "-",
            request.hold,
            change.changed,
            request.by or "-",
            resumed,
        )
        return self.holds.reply(change, resumed)

    async def ListHolds(self, request: pb.HoldsRequest, context: grpc.aio.ServicerContext) -> pb.HoldReply:
        """Every hold on remediation in force: operators' and the config's."""
        await self._identify("ListHolds", context)
        if self.holds is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "collector is not ready")
        return self.holds.reply()


class StoreIngestService(pb_grpc.IngestServicer):
    """The store process's side of the private socket: commits ingest processes' groups."""

    def __init__(self, catalogue: Catalogue, writer: Writer, metrics: Metrics) -> None:
        self.catalogue = catalogue
        self.writer = writer
        self.metrics = metrics
        #: ingest process -> (the flush lag it last told, time.monotonic() it told it)
        self.flush_lags: dict[str, tuple[float, float]] = {}

    def ingest_lag_s(self, fresh_s: float) -> float | None:
        """The longest flush lag an ingest process told within ``fresh_s`` seconds; None when none did."""
        since = time.monotonic() - fresh_s
        lags = [lag for lag, at in self.flush_lags.values() if at >= since]
        return max(lags) if lags else None

    async def Commit(self, request: pb.CommitGroup, context: grpc.aio.ServicerContext) -> pb.CommitReply:
        """Commit one group of validated batches; one result per entry, in order."""
        if request.counters:
            self.metrics.add(dict(request.counters))
        if request.process and math.isfinite(request.flush_lag_s) and request.flush_lag_s >= 0:
            if len(self.flush_lags) >= MAX_INGEST_PROCESSES_TOLD and request.process not in self.flush_lags:
                self.flush_lags.clear()  # processes restarted many times over: the live ones tell again
            self.flush_lags[request.process] = (request.flush_lag_s, time.monotonic())
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


#: Ingest processes whose flush lag the store process keeps (their pids; restarted ones get new ones).
MAX_INGEST_PROCESSES_TOLD = 1024
#: An ingest process's flush lag counts this long after it told it (it tells it every second).
INGEST_LAG_FRESH_S = 10.0

#: A lake collector's recorded flush advice counts for this long at least (it records it every
#: diagnosis period; one that stopped recording, e.g. died, is forgotten after this).
LAKE_ADVICE_FRESH_S = 30.0


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
            shard = cfg.shard or f"{socket.gethostname()}_{cfg.listen.rpartition(':')[2]}"
            elsewhere = shard_served_elsewhere(conninfo(cfg.lake), shard)
            if elsewhere:
                raise StartupError(
                    f"shard {shard!r} of the lake is served by another collector ({elsewhere}): give each "
                    "collector of a lake a shard of its own (--shard), or stop the other one first"
                )
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
                    background_checkpoints=cfg.background_checkpoints,
                    merge_row_groups=cfg.merge_row_groups,
                )
            except (duckdb.Error, OSError) as exc:  # full disk, read-only or missing directory, not a DB
                raise StartupError(f"cannot open the store {cfg.db}: {_reason(exc)}") from exc
        self.writer = Writer(self.store, cfg.group_commit_max_batches, spacing_s=cfg.group_commit_spacing_s)
        self.auth = Authenticator(tokens, self.metrics.inc, mtls_roles)
        self.service = TelemetryService(cfg, self.store, self.writer, self.metrics, self.auth)
        self.exporter: MetricsServer | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.ingest_processes: IngestProcesses | None = None  # when cfg.ingest_processes > 0
        self.store_ingest: StoreIngestService | None = None  # their commits' side, then
        self._private_dir: str | None = None
        self._tasks: list[asyncio.Task] = []
        self.tasks: dict[str, TaskHealth] = {}  # periodic task name -> its health (/metrics, collector_tasks)
        self.leader_tasks = LeaderTasks(
            self.tasks, self.metrics.inc, self.store.note_failure
        )  # the lease holder's alone on a lake
        self.lease = (
            PostgresLease(conninfo(cfg.lake), self.store.shard, lease_timeout_s(cfg)) if cfg.lake else None
        )
        self.diagnosis = Diagnosis(
            cfg, self.store, self.writer, self.metrics, self.service.query_pool, self.lease
        )
        self.service.fault_updater = self.diagnosis.update_fault
        self.diagnosis.advised_lag_s = self._advised_lag_s
        self.diagnosis.own_lag_s = self._own_lag_s
        self.holds = HoldKeeper(self.diagnosis.holds, self.store, self.writer, self.service.node)
        self.service.resume_held = self.diagnosis.resume_held
        self.fabric = FabricDiscovery(
            self.store, self.writer, self.service.query_pool, cfg.fabric_fresh_s, cfg.fabric_topology
        )
        self.replanner = Replanner(cfg, self.store, self.writer, self.metrics, self.service.query_pool)
        self.rollups = Rollups(
            self.store,
            self.writer,
            self.metrics,
            cfg.max_clock_skew_s,
            leading=lambda: self.leader_tasks.running,
        )

    def _own_lag_s(self) -> float:
        """How far behind the clock this collector's agents' data may be from its flush advice: its
        advisor's own account, or, when ingest processes advise the agents, the longest any of them
        told lately (the longest it may be while none did)."""
        advisor = self.service.flush_advisor
        if not advisor.enabled:
            return 0.0
        if not self.cfg.ingest_processes:
            return advisor.lag_s()
        told = self.store_ingest.ingest_lag_s(INGEST_LAG_FRESH_S) if self.store_ingest else None
        return advisor.steps_s[-1] if told is None else told

    def _advised_lag_s(self) -> float:
        """How far behind the clock the data C4D reads may be from the flush advice: this collector's
        own; on a lake, the longest any of its collectors recorded lately (``Lease.lake_lag_s``), or the
        longest interval any may advise while that record cannot be read."""
        own = self._own_lag_s()
        advisor = self.service.flush_advisor
        if not self.cfg.lake or not advisor.enabled:
            return own
        lake = self.diagnosis.lease.lake_lag_s(max(LAKE_ADVICE_FRESH_S, 3 * self.cfg.diagnose_interval_s))
        if lake is None or not math.isfinite(lake) or lake < 0:  # unreadable, or a row no collector wrote
            return advisor.steps_s[-1]
        return max(own, min(lake, advisor.steps_s[-1]))  # no advice is longer than the longest step

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        # operators' holds before anything remediates or serves: an ingest process relays ListHolds and
        # SetHold as soon as it listens, which is before this process reports itself serving
        try:
            self.holds.load()
        except duckdb.Error as exc:
            raise StartupError(f"cannot read the remediation holds from the store: {_reason(exc)}") from exc
        self.service.holds = self.holds
        # gRPC sets SO_REUSEPORT by default: a second collector on this port would then serve beside this
        # one, the kernel splitting the agents between two stores; off, that collector's bind fails
        self.server, health_servicer = agent_server(self.cfg, ("grpc.so_reuseport", 0))
        pb_grpc.add_TelemetryServicer_to_server(self.service, self.server)
        if self.cfg.ingest_processes:
            # agents reach the ingest processes; this process serves them on a private socket only
            self.store_ingest = StoreIngestService(self.store.catalogue, self.writer, self.metrics)
            pb_grpc.add_IngestServicer_to_server(self.store_ingest, self.server)
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
            try:
                self.port = await self.ingest_processes.start()
            except OSError as exc:
                raise StartupError(f"cannot listen on {self.cfg.listen}: {_reason(exc)}") from exc
        if self.cfg.metrics_listen:
            self.exporter = MetricsServer(self, self.cfg.metrics_listen)
            try:
                self.exporter.start()
            except OSError as exc:
                raise StartupError(
                    f"cannot serve /metrics on {self.cfg.metrics_listen}: {_reason(exc)}"
                ) from exc
        await set_serving(health_servicer)
        self._tasks = [
            asyncio.create_task(
                self._every(self.cfg.metrics_interval_s, self.snapshot_metrics, "metrics_snapshot")
            ),
        ]
        if self.cfg.lake:  # each shard prunes its own sequence bookkeeping (only it appends there)
            self._tasks.append(
                asyncio.create_task(
                    self._every(self.cfg.retention_interval_s, self.prune_sequences, "sequence_prune")
                )
            )
        self._declare_leader_tasks()
        if self.lease is not None:
            # a lake: the lease's holder runs the lake-wide tasks; followers try every period, so a dead
            # leader's lease (free at once) or a hung one's (free after the timeout) is taken over
            await self._lead()
            self._tasks.append(
                asyncio.create_task(self._every(lease_period_s(self.cfg), self._lead, "diagnosis_lease"))
            )
        else:  # alone on its store a collector leads at once
            if self.cfg.diagnose_interval_s > 0:
                await self.diagnosis.lead()
            self.leader_tasks.follow(True)
        log.info(
            "collector serving listen=%s port=%d ingest_processes=%d store=%s tls=%s mtls=%s tokens=%d metrics=%s",
            self.cfg.listen,
            self.port,
            self.cfg.ingest_processes,
            f"lake {shown_url(self.cfg.lake)} shard {self.store.shard}" if self.cfg.lake else self.cfg.db,
            self.credentials is not None,
            bool(self.cfg.tls_client_ca),
            len(self.auth.tokens or ()),
            self.exporter.url if self.exporter else "off",
        )
        return self.port

    async def _every(self, period_s: float, fn, name: str | None = None) -> None:
        """Run ``fn`` every ``period_s`` until cancelled: failures are logged, counted and retried with backoff."""
        health = self.tasks.setdefault(name or fn.__name__, TaskHealth(name or fn.__name__, period_s))
        await run_every(health, fn, self.metrics.inc, self.store.note_failure)

    def _declare_leader_tasks(self) -> None:
        """The lake-wide periodic tasks, run by the lease's holder only (all of them, alone on a store)."""
        cfg, tasks = self.cfg, self.leader_tasks
        tasks.add("retention", cfg.retention_interval_s, self.retain)
        if cfg.diagnose_interval_s > 0:
            tasks.add("diagnosis", cfg.diagnose_interval_s, self.diagnosis.diagnose_if_leading)
            if Replanner.enabled(cfg):  # acts on what diagnosis stored
                tasks.add("replan", cfg.replan_interval_s or cfg.diagnose_interval_s, self._replan_if_leading)
        if cfg.rollup_interval_s > 0:  # on a lake: the lake's rollup tables, from every shard's rows
            tasks.add(
                "rollup",
                cfg.rollup_interval_s,
                self.rollups.run,
                aligned_offset_s=rollup_offset_s(cfg.rollup_interval_s),
            )
        if cfg.fabric_discovery_interval_s > 0:
            tasks.add("fabric_discovery", cfg.fabric_discovery_interval_s, self.fabric.run)
        if cfg.lake and cfg.lake_upkeep_interval_s > 0:
            tasks.add("lake_upkeep", cfg.lake_upkeep_interval_s, self.lake_upkeep)

    async def _lead(self) -> bool:
        """Take or renew the lake's lease; start the leader tasks on taking it, stop them on losing it."""
        await self.diagnosis.lead()
        self.leader_tasks.follow(self.diagnosis.leading)
        return self.diagnosis.leading

    async def _replan_if_leading(self) -> None:
        """Replan when this collector leads the diagnosis (the replans act on its faults)."""
        if self.diagnosis.leading:
            await self.replanner.run()

    async def retain(self) -> dict[str, int]:
        """Drop rows older than the retention age, and rows dated beyond the allowed clock skew."""
        return await maintenance.retain(self.cfg, self.writer, self.metrics)

    async def lake_upkeep(self) -> None:
        """Merge the lake's small files, expire old snapshots and delete the files they freed."""
        await maintenance.lake_upkeep(self.cfg, self.store, self.metrics, self.service.query_pool)

    async def prune_sequences(self) -> int:
        """A lake shard's superseded sequence rows (each agent's newest one stays)."""
        return await maintenance.prune_sequences(self.writer)

    async def snapshot_metrics(self) -> None:
        """Write the counters into collector_metrics and the periodic tasks' health into collector_tasks."""
        await maintenance.snapshot_metrics(
            self.store.catalogue, self.writer, self.metrics, self.tasks, self.service.node
        )

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop serving, finish queued commits, checkpoint and close the file."""
        for t in self._tasks:
            t.cancel()
        self.leader_tasks.stop(finish=False)
        if self.lease is not None:  # a follower takes over at its next try
            await asyncio.get_running_loop().run_in_executor(None, self.lease.release)
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
        self.rollups.close()
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
        log.info("collector stopped")


#: Allocations (net) between young-generation collections once serving: Python's 700 made the
#: collector collect ~45 times a second at 2,000 agents, 7% of a core, with full collections of up to
#: 0.15 s; ingest's objects are freed by reference counting, not by the cycle collector.
GC_YOUNG_THRESHOLD = 50_000


def quiet_gc() -> None:
    """Leave start-up's objects out of every later collection and collect cycles less often."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 10)


async def serve(cfg: CollectorConfig, ready: asyncio.Event | None = None, tune_gc: bool = False) -> None:
    """Run a collector until cancelled or signalled (``tune_gc``: a process of its own, see ``quiet_gc``)."""
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
    if tune_gc:
        quiet_gc()
    try:
        await stop.wait()
    finally:
        await collector.stop()
