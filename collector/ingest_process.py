"""An ingest process: serves agents on the collector's address, commits through the store process.

A collector with ``ingest_processes = N`` runs N of these beside the process that owns the store.
They share the public address (SO_REUSEPORT, so the kernel spreads agent connections over them),
do the per-message work that bounded a single Python process (gRPC, Arrow decoding, validation,
tokens), group the valid batches of many agents per table, and send each group to the store
process over a private unix socket (the ``Ingest`` service). An agent's batch is acknowledged only
after the store process has committed it, exactly as in one process. Every other RPC (Hello,
Query, Stats, UpdateFault, SetHold, ListHolds) is relayed to the store process with the caller's metadata, so tokens
are checked and counted there as before.

Started by ``c4.collector.ingest_processes`` as ``python -m c4.collector.ingest_process``, with a JSON start
message on stdin; it prints ``ready PORT`` on stdout once serving, and stops when stdin closes
(its collector stopped or died).
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable

import grpc

from c4.catalogue import Catalogue, load
from c4.collector.auth import (
    CERT_NAME_KEY,
    Authenticator,
    TokenTable,
    certificate_name,
    mtls_roles_of,
    server_credentials,
)
from c4.collector.grouping import encode_group, results_of
from c4.collector.ingest import IngestService, Metrics, agent_server, bind, set_serving
from c4.collector.sequence import BrokenStreams
from c4.collector.store import CommitResult, PendingBatch
from c4.config import CollectorConfig
from c4.logs import setup_logging
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

log = logging.getLogger("c4.collector.ingest_process")

#: Metadata a relay must not copy onto its own call (gRPC sets these itself).
_HOP_KEYS = ("user-agent", "grpc-", ":")


def _payload_bytes(b: PendingBatch) -> int:
    """About what a batch adds to a CommitGroup: its wire bytes, else its decoded size."""
    if b.ipc_parts is not None:
        return len(b.ipc_parts[0]) + len(b.ipc_parts[1])
    return b.rows_table().nbytes if b.num_rows else 0


class StoreClient:
    """The ingest process's commit sink: groups submissions and commits them in the store process.

    Submissions that arrive while a group is on its way wait and go together in the next one, so
    the store process sees a few large groups per second whatever the number of agents. A stream's
    batches never travel in two groups at once (the store process would commit them in whichever
    order the groups arrive), and once one failed here nothing later of that stream is sent.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        metrics: Metrics,
        max_rows: int = 256_000,
        max_bytes: int = 32 << 20,
        max_in_flight: int = 2,
        linger_s: float = 0.002,
        counters_every_s: float = 1.0,
    ) -> None:
        self.stub = pb_grpc.IngestStub(channel)
        self.metrics = metrics
        self.max_rows = max_rows
        #: Payload bytes a group stops growing at: the store process refuses a message larger than
        #: its receive limit, and a refused group fails every batch in it.
        self.max_bytes = max_bytes
        self.max_in_flight = max_in_flight
        self.linger_s = linger_s
        self.counters_every_s = counters_every_s
        self._pending: deque[tuple[list[PendingBatch], asyncio.Future]] = deque()
        self._in_flight = 0
        self._sent_counters: Counter[str] = Counter()
        self._tasks: set[asyncio.Task] = set()
        self._streams_in_flight: Counter[int] = Counter()  # streams with batches in a group on its way
        self.broken = BrokenStreams()
        #: how far behind the clock this process's agents' data may be from its flush advice (set by
        #: serve_ingest_process: the advisor's lag_s), told to the store process with every message
        self.flush_lag_s: Callable[[], float] = lambda: 0.0
        self.process = str(os.getpid())

    def _about_us(self, group: pb.CommitGroup) -> pb.CommitGroup:
        """The group with this process's name and flush lag set."""
        group.process = self.process
        group.flush_lag_s = self.flush_lag_s()
        return group

    def submit_async(self, batch: PendingBatch) -> asyncio.Future[CommitResult]:
        """Commit one batch in the store process; the future gets its result."""
        many = self.submit_many_async([batch])
        one: asyncio.Future[CommitResult] = asyncio.get_running_loop().create_future()
        many.add_done_callback(lambda f: one.set_result(f.result()[0]) if not one.done() else None)
        return one

    def submit_many_async(self, batches: list[PendingBatch]) -> asyncio.Future[list[CommitResult]]:
        """Commit batches in the store process (grouped with other streams'); the future gets their results."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[CommitResult]] = loop.create_future()
        self._pending.append((batches, fut))
        if self._in_flight < self.max_in_flight:
            self._in_flight += 1
            task = loop.create_task(self._send())
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)
        return fut

    def _counter_delta(self) -> dict[str, int]:
        now = Counter(self.metrics.snapshot())
        delta = {
            k: v - self._sent_counters.get(k, 0) for k, v in now.items() if v != self._sent_counters.get(k, 0)
        }
        self._sent_counters = now
        return delta

    def _take(self) -> list[tuple[list[PendingBatch], asyncio.Future]]:
        """The next group's submissions, in order, leaving (in order) those of streams already on their way."""
        taken, rows, nbytes = [], 0, 0
        waiting: deque = deque()
        blocked = {s for s, n in self._streams_in_flight.items() if n}
        while self._pending and (not taken or rows < self.max_rows):
            item = self._pending.popleft()
            streams = {b.stream for b in item[0] if b.stream}
            if streams & blocked:
                waiting.append(item)
                blocked |= streams  # what follows of these streams waits too
                continue
            size = sum(_payload_bytes(b) for b in item[0])
            if taken and nbytes + size > self.max_bytes:  # the next group takes it
                self._pending.appendleft(item)
                break
            taken.append(item)
            rows += sum(b.num_rows for b in item[0])
            nbytes += size
        self._pending.extendleft(reversed(waiting))
        return taken

    async def _send(self) -> None:
        try:
            await asyncio.sleep(self.linger_s)  # let the other streams' messages of this moment join
            while self._pending:
                taken = self._take()
                if not taken:  # all wait for groups on their way; their senders take them next
                    break
                flat = [b for batches, _ in taken for b in batches]
                streams = Counter(b.stream for b in flat if b.stream)
                self._streams_in_flight.update(streams)
                try:
                    results = await self._commit(flat)
                finally:
                    self._streams_in_flight.subtract(streams)
                    self._streams_in_flight += Counter()  # drop the zeros
                start = 0
                for batches, fut in taken:
                    if not fut.done():
                        fut.set_result(results[start : start + len(batches)])
                    start += len(batches)
        finally:
            self._in_flight -= 1

    async def _commit(self, flat: list[PendingBatch]) -> list[CommitResult]:
        """Commit through the store process; batches of streams broken here are not sent."""
        verdicts = [self.broken.refusal(b) for b in flat]
        send = [b for b, v in zip(flat, verdicts, strict=True) if v is None]
        sent = iter(await self._commit_sent(send) if send else ())
        results = [next(sent) if v is None else CommitResult.of(v) for v in verdicts]
        for b, r in zip(flat, results, strict=True):
            if r.error and not r.refused:
                self.broken.mark(b)
        return results

    async def _commit_sent(self, flat: list[PendingBatch]) -> list[CommitResult]:
        delta = self._counter_delta()
        try:
            group = self._about_us(encode_group(flat, delta))
            reply = await self.stub.Commit(group)
            results = results_of(reply)
            if len(results) != len(flat):
                raise RuntimeError(f"store process answered {len(results)} results for {len(flat)} batches")
            return results
        except grpc.aio.AioRpcError as exc:
            self._sent_counters.subtract(delta)  # not delivered: they go with the next group
            log.warning("store process commit failed code=%s error=%s", exc.code().name, exc.details())
            return [CommitResult(error=f"collector store process unavailable: {exc.details()}")] * len(flat)
        except Exception as exc:  # an ack with an error (the agent retries), never a lost batch
            log.exception("group commit failed batches=%d", len(flat))
            return [CommitResult(error=f"collector store process: {exc}")] * len(flat)

    async def flush_counters(self) -> None:
        """Send counter increments not yet carried by a group (refusals with nothing to commit), and the
        flush lag (every time: the store process forgets a lag not told again lately)."""
        delta = self._counter_delta()
        try:
            await self.stub.Commit(self._about_us(pb.CommitGroup(counters=delta)))
        except grpc.aio.AioRpcError:
            self._sent_counters.subtract(delta)  # try again next time

    async def run_counters(self) -> None:
        """Flush counters every ``counters_every_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.counters_every_s)
            await self.flush_counters()


def _relayed(context: grpc.aio.ServicerContext) -> list[tuple[str, str | bytes]]:
    """The caller's metadata for the store process, with the client certificate's name we saw."""
    metadata = [
        (k, v)
        for k, v in context.invocation_metadata() or ()
        if not k.startswith(_HOP_KEYS) and k != CERT_NAME_KEY
    ]
    name = certificate_name(context)
    if name:
        metadata.append((CERT_NAME_KEY, name))
    return metadata


class IngestProcessService(IngestService):
    """Push and PushBundle here; Hello, Query, Stats, UpdateFault, SetHold and ListHolds relayed to the
    store process."""

    keep_ipc_parts = True  # groups carry the agents' record batches as they came, not re-encoded

    def __init__(
        self,
        cfg: CollectorConfig,
        catalogue: Catalogue,
        sink: StoreClient,
        metrics: Metrics,
        auth: Authenticator,
        store_channel: grpc.aio.Channel,
    ) -> None:
        super().__init__(cfg, catalogue, sink, metrics, auth)
        self.sink = sink
        self.store_stub = pb_grpc.TelemetryStub(store_channel)

    async def _unary(self, method: str, request, context: grpc.aio.ServicerContext):
        try:
            return await getattr(self.store_stub, method)(
                request, metadata=_relayed(context), timeout=context.time_remaining()
            )
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")

    async def Hello(self, request: pb.HelloRequest, context: grpc.aio.ServicerContext) -> pb.HelloReply:
        """Relayed to the store process (it records the node and knows the agent's last sequence);
        checked here too, where the agent's batches come, which remembers the node it registered."""
        ident = await self._identify("Hello", context, request.agent_id)
        node = await self._hello_node(ident, request, context)
        reply = await self._unary("Hello", request, context)
        self.nodes[request.agent_id] = node
        reply.flush_interval_s = self.hello_flush_advice()  # this process commits the agent's batches
        return reply

    async def Stats(self, request: pb.StatsRequest, context: grpc.aio.ServicerContext) -> pb.StatsReply:
        """Relayed: the store process holds every process's counters."""
        await self.flush_counters_now()
        return await self._unary("Stats", request, context)

    async def UpdateFault(self, request: pb.FaultUpdate, context: grpc.aio.ServicerContext):
        """Relayed to the store process."""
        return await self._unary("UpdateFault", request, context)

    async def SetHold(self, request: pb.HoldRequest, context: grpc.aio.ServicerContext):
        """Relayed to the store process."""
        return await self._unary("SetHold", request, context)

    async def ListHolds(self, request: pb.HoldsRequest, context: grpc.aio.ServicerContext):
        """Relayed to the store process."""
        return await self._unary("ListHolds", request, context)

    async def Query(self, request: pb.QueryRequest, context: grpc.aio.ServicerContext):
        """Relayed to the store process, chunk by chunk."""
        call = self.store_stub.Query(request, metadata=_relayed(context), timeout=context.time_remaining())
        try:
            async for chunk in call:
                yield chunk
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
        finally:
            call.cancel()

    async def flush_counters_now(self) -> None:
        """Bring the store process's counters up to date with this process's."""
        await self.sink.flush_counters()


async def serve_ingest_process(cfg: CollectorConfig, store_address: str, stop: asyncio.Event) -> None:
    """Serve agents on ``cfg.listen`` until ``stop`` is set; prints ``ready PORT`` once serving."""
    metrics = Metrics()
    tokens = TokenTable.load(cfg.tokens_file) if cfg.tokens_file else None
    auth = Authenticator(tokens, metrics.inc, mtls_roles_of(cfg))
    channel = grpc.aio.insecure_channel(
        store_address,
        options=[
            ("grpc.max_send_message_length", 1 << 30),
            ("grpc.max_receive_message_length", 64 << 20),
        ],
    )
    # a group well under the store process's receive limit (agent_server's, from max_batch_bytes)
    sink = StoreClient(channel, metrics, max_bytes=3 * cfg.max_batch_bytes)
    service = IngestProcessService(cfg, load(), sink, metrics, auth, channel)
    sink.flush_lag_s = service.flush_advisor.lag_s
    server, health_servicer = agent_server(cfg, ("grpc.so_reuseport", 1))
    pb_grpc.add_TelemetryServicer_to_server(service, server)
    credentials = server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca) if cfg.tls_cert else None
    port = bind(server, cfg.listen, credentials)
    await server.start()
    await set_serving(health_servicer)
    counters = asyncio.create_task(sink.run_counters())
    print(f"ready {port}", flush=True)
    log.info("ingest process serving listen=%s pid=%d store=%s", cfg.listen, os.getpid(), store_address)
    try:
        await stop.wait()
    finally:
        await server.stop(2.0)
        counters.cancel()
        await sink.flush_counters()
        await channel.close()


def main() -> int:
    """Entry point of one ingest process (see the module docstring)."""
    faulthandler.enable()  # a native crash prints the Python stacks on stderr (the collector's log)
    start = json.loads(sys.stdin.readline())
    setup_logging(start.get("log_level", "INFO"))
    cfg = CollectorConfig.model_validate(start["config"])

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the collector, which stops us

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)  # systemd stops every process of the unit

        def watch_stdin() -> None:  # the collector closes our stdin to stop us, or dies
            sys.stdin.read()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_stdin, name="c4-ingest-stdin", daemon=True).start()
        await serve_ingest_process(cfg, start["store"], stop)

    try:
        asyncio.run(run())
    except OSError as exc:
        log.error("ingest process cannot serve error=%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
