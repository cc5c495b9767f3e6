"""The agent's gRPC side: Hello, then a PushBundle stream fed from the spool, with reconnect and backoff."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from c4.agent.spool import Spool
from c4.security import ClientSecurity, channel_options
from c4.shard import ordered_collectors, parse_collectors
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

log = logging.getLogger("c4.agent.client")

#: The longest flush interval a collector's advice is followed up to, seconds (an advice outside 0..this,
#: NaN included, is taken as none).
MAX_FLUSH_ADVICE_S = 60.0
#: Ack codes after which the batch stays spooled and is sent again later.
#: How often gRPC's sync API wakes a thread blocked on a reply, in the agent process (its own default is
#: 0.1 s, so that a signal handler never waits longer; the agent's signals are handled by its main thread,
#: which never blocks in gRPC). 10 wake-ups a second were ~1 ms of CPU a second, a tenth of the agent's.
GRPC_WAIT_SLICE_S = 2.0


def quiet_grpc_waits(slice_s: float = GRPC_WAIT_SLICE_S) -> bool:
    """Make gRPC's blocking waits sleep ``slice_s`` between checks (a process-wide setting of grpc's
    ``_common.MAXIMUM_WAIT_TIMEOUT``); False, changing nothing, when this gRPC has no such setting.

    Only for a process whose main thread does not wait in gRPC (``c4 agent``): gRPC still returns as
    soon as a reply arrives, only its periodic re-checks become rarer."""
    try:
        from grpc import _common  # lazy: a private module, touched only by the agent process
    except ImportError:
        return False
    if not isinstance(getattr(_common, "MAXIMUM_WAIT_TIMEOUT", None), int | float):
        return False
    _common.MAXIMUM_WAIT_TIMEOUT = slice_s
    return True


#: The agent's own channel options: no BDP ping after each read (it sizes the flow-control window for bulk
#: throughput; a bundle a second needs none): ~0.4 ms of CPU a second less in gRPC's threads on this host.
AGENT_CHANNEL_OPTIONS = [("grpc.http2.bdp_probe", 0)]

#: Longest a sender waits for a new batch before looking again: appends and the end of its stream
#: wake it at once, so this only bounds a missed wake-up (it was 0.2 s of polling: 5 wake-ups a second).
IDLE_WAIT_S = 5.0
RETRYABLE_CODES = {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.INTERNAL.value[0]}


@dataclass
class SendStats:
    """Counters of the sending side (read by the agent's health rows)."""

    batches_sent: int = 0
    batches_acked: int = 0
    batches_duplicate: int = 0
    batches_refused: int = 0
    reconnects: int = 0
    connected: bool = False
    send_errors: int = 0  # connections or streams that ended in an error
    last_send_error: str = ""
    last_ack_monotonic_s: float = field(default_factory=time.monotonic)  # or when the sender was made


class _Reconnect(Exception):
    """The collector asked us to retry later."""


class AgentCannotContinue(RuntimeError):
    """The agent cannot send without losing or mixing up data; the message says why (exit non-zero)."""


class Sender:
    """Sends spooled batches in order; deletes each once acknowledged (committed or refused)."""

    def __init__(
        self,
        address: str,
        agent_id: str,
        spool: Spool,
        hello: Callable[[], pb.HelloRequest],
        *,
        max_in_flight: int = 64,
        max_message_bytes: int = 8 << 20,
        max_bundle_batches: int = 64,
        bundles: bool = True,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        security: ClientSecurity | None = None,
    ) -> None:

        self.addresses = ordered_collectors(agent_id, parse_collectors(address))  # home first, then failover
        self.address = self.addresses[0]
        self.security = security or ClientSecurity()
        self.agent_id = agent_id
        self.spool = spool
        self.hello = hello
        self.max_in_flight = max_in_flight
        self.max_message_bytes = max_message_bytes
        self.max_bundle_batches = max_bundle_batches
        self.bundles = bundles  # PushBundle; falls back to Push against a collector without it
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stats = SendStats()
        #: Set when sending cannot go on (the agent exits non-zero with this message).
        self.fatal = ""
        self._loop: asyncio.AbstractEventLoop | None = None  # run()'s event loop, while it runs
        self._wake: asyncio.Event | None = None  # set by new batches, acks that free the window, abort()
        self._call = None  # the open stream, cancelled by abort() at shutdown
        self._channel: grpc.aio.Channel | None = None  # the open connection, closed by abort() at shutdown
        self._in_flight = 0  # batches sent on the open stream and not acknowledged yet
        self._aborted = False
        self._new_epoch_started = False  # the last Hello found the collector ahead and we started an epoch
        #: the collector's latest advice: flush no more often than this (seconds; 0: none)
        self.flush_advice_s = 0.0

    def run(self, stop: threading.Event) -> None:
        """Connect, stream and reconnect with exponential backoff until ``stop`` is set (seen within
        IDLE_WAIT_S, at once after ``abort()``). Runs an event loop on the calling thread: gRPC's asyncio
        API wakes it only for new batches and replies, with no thread of its own polling in Python."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._wake = asyncio.Event()
        self._aborted = False
        self.spool.add_listener(self._poke)
        try:
            loop.run_until_complete(self._run(stop))
        finally:
            self.spool.remove_listener(self._poke)
            self._loop = None
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _poke(self) -> None:
        """Wake the sender's loop (from any thread): new batches in the spool."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop closed meanwhile
                pass

    async def _pause(self, seconds: float, stop: threading.Event) -> bool:
        """Sleep ``seconds`` unless stopped first (abort() ends it at once); True when stopped."""
        deadline = time.monotonic() + seconds
        while not (stop.is_set() or self._aborted):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._wake.clear()  # new batches wake it too: it only looks again and sleeps on
            try:
                await asyncio.wait_for(self._wake.wait(), min(left, IDLE_WAIT_S))
            except TimeoutError:
                pass
        return True

    async def _run(self, stop: threading.Event) -> None:
        backoff = self.backoff_initial_s
        attempt = 0
        traced: set[type] = set()
        while not (stop.is_set() or self._aborted):
            # the home collector first on every reconnect; the next ones when it does not answer
            self.address = self.addresses[attempt % len(self.addresses)]
            attempt += 1
            channel = None
            try:
                channel, metadata = self.security.aio_channel(
                    self.address, [*channel_options(self.max_message_bytes), *AGENT_CHANNEL_OPTIONS]
                )
                self._channel = channel
                stub = pb_grpc.TelemetryStub(channel)
                request = self.hello()
                request.spool_epoch = self.spool.epoch
                reply = await stub.Hello(request, timeout=10, metadata=metadata)
                self._take_flush_advice(reply.flush_interval_s)
                self._check_collector_seq(reply.last_committed_seq)
                skipped = self.spool.ack_through(reply.last_committed_seq)
                self.stats.reconnects += 1
                self.stats.connected = True
                log.info(
                    "connected collector=%s agent=%s last_committed_seq=%d already_committed=%d",
                    self.address,
                    self.agent_id,
                    reply.last_committed_seq,
                    skipped,
                )
                backoff = self.backoff_initial_s
                attempt = 0
                await self._stream(stub, metadata, stop)
            except asyncio.CancelledError:
                if stop.is_set() or self._aborted:
                    return  # abort() at shutdown cancelled the stream: not a send error
                self._send_failed("CANCELLED: the stream was cancelled")
                log.warning("stream cancelled collector=%s agent=%s", self.address, self.agent_id)
            except grpc.RpcError as exc:
                if (stop.is_set() or self._aborted) and exc.code() == grpc.StatusCode.CANCELLED:
                    return  # abort() at shutdown cancelled the stream: not a send error
                self._send_failed(f"{exc.code().name}: {exc.details()}")
                refused = exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
                log.log(
                    logging.ERROR if refused else logging.WARNING,
                    "collector refused us (check token_file) collector=%s agent=%s code=%s detail=%s retry_in_s=%.1f"
                    if refused
                    else "collector unavailable collector=%s agent=%s code=%s detail=%s retry_in_s=%.1f",
                    self.address,
                    self.agent_id,
                    exc.code().name,
                    exc.details(),
                    backoff,
                )
            except _Reconnect as exc:
                self._send_failed(f"collector asked to retry: {exc}")
                log.warning("collector asked to retry agent=%s reason=%s", self.agent_id, exc)
            except AgentCannotContinue as exc:
                self.fatal = str(exc)
                log.error("agent cannot continue agent=%s reason=%s", self.agent_id, exc)
                return
            except Exception as exc:  # a bug or a bad value must never end sending for good: retry
                self._send_failed(f"{type(exc).__name__}: {exc}")
                log.error(
                    "sender failed, retrying collector=%s agent=%s error=%s: %s retry_in_s=%.1f",
                    self.address,
                    self.agent_id,
                    type(exc).__name__,
                    exc,
                    backoff,
                    exc_info=type(exc) not in traced or log.isEnabledFor(logging.DEBUG),
                )
                traced.add(type(exc))  # the traceback once per kind of error, then one line each
                attempt = len(self.addresses)  # not the collector's fault: back off before the next try
            finally:
                self.stats.connected = False
                self._channel = None
                if channel is not None:
                    await channel.close()
            if attempt % len(self.addresses):  # another collector to try before backing off
                continue
            if await self._pause(backoff * (0.8 + 0.4 * random.random()), stop):
                return
            backoff = min(backoff * 2, self.backoff_max_s)

    def _check_collector_seq(self, last_committed_seq: int) -> None:
        """Refuse a Hello whose last committed sequence this spool never issued.

        That happens when another agent pushes under our agent id, or the collector's bookkeeping
        was damaged: trusting it would drop every batch we hold as "already committed". The first
        time, start a new spool epoch (the collector then starts our sequence over) and reconnect;
        if the collector is still ahead right after that, stop: we cannot send without loss.
        """
        if last_committed_seq < self.spool.next_seq:
            self._new_epoch_started = False
            return
        if self._new_epoch_started:
            raise AgentCannotContinue(
                f"collector {self.address} reports sequence {last_committed_seq} committed for agent id "
                f"{self.agent_id!r} although this spool has issued only up to {self.spool.next_seq - 1}, "
                "even after starting a new spool epoch: is another agent using the same agent id?"
            )
        old = self.spool.epoch
        self.spool.new_epoch()
        self._new_epoch_started = True
        raise _Reconnect(
            f"collector reports sequence {last_committed_seq} committed, beyond this spool's "
            f"{self.spool.next_seq - 1}: started a new spool epoch ({old} -> {self.spool.epoch})"
        )

    def _send_failed(self, reason: str) -> None:
        """Count a failed connection or stream and keep why (read by the agent's health rows)."""
        self.stats.send_errors += 1
        self.stats.last_send_error = reason[:500]

    async def _stream(self, stub: pb_grpc.TelemetryStub, metadata, stop: threading.Event) -> None:
        if self.bundles:
            try:
                await self._pump(stub.PushBundle(metadata=metadata), True, stop)
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                log.warning(
                    "collector has no PushBundle (older version): sending one batch per message collector=%s",
                    self.address,
                )
                self.bundles = False
        await self._pump(stub.Push(metadata=metadata), False, stop)

    def _next_batches(self, after: int, room: int, epoch: int) -> tuple[list[pb.Batch], int]:
        """Up to ``room`` spooled batches after sequence ``after`` (fewer when the message would grow past its
        limit), and the last sequence they cover (batches dropped by a full spool meanwhile included)."""
        limit_bytes = self.max_message_bytes - (64 << 10)  # room for the message framing
        out: list[pb.Batch] = []
        size = 0
        for seq in self.spool.pending(after=after):
            if len(out) >= min(room, self.max_bundle_batches):
                break
            batch = self.spool.read(seq)
            if batch is None:  # dropped by a full spool meanwhile
                after = seq
                continue
            if out and size + len(batch.payload) > limit_bytes:
                break  # goes first in the next message
            after = seq
            size += len(batch.payload)
            out.append(
                pb.Batch(
                    agent_id=self.agent_id,
                    seq=seq,
                    table=batch.table,
                    schema_version=batch.schema_version,
                    arrow_ipc=batch.payload,
                    spool_epoch=epoch,
                )
            )
        return out, after

    def _take_flush_advice(self, advice_s: float) -> None:
        """Keep the collector's flush advice: within 0..MAX_FLUSH_ADVICE_S (anything else: none)."""
        advice_s = float(advice_s)
        self.flush_advice_s = advice_s if 0.0 <= advice_s <= MAX_FLUSH_ADVICE_S else 0.0

    async def _read_acks(self, call, bundled: bool) -> None:
        """Handle every ack of the stream's replies; each frees a place in the window and wakes the writer."""
        async for reply in call:
            if bundled:
                self._take_flush_advice(reply.flush_interval_s)
            for ack in reply.acks if bundled else (reply,):
                self._in_flight -= 1
                self._on_ack(ack)
            self._wake.set()

    async def _pump(self, call, bundled: bool, stop: threading.Event) -> None:
        """Write spooled batches into the open stream ``call`` (a bundle per message, or one batch each),
        keeping at most max_in_flight unacknowledged, while a reader task handles the acks."""
        self._call = call
        self._in_flight = 0
        wake = self._wake
        reader = asyncio.ensure_future(self._read_acks(call, bundled))
        last_sent = 0
        epoch = self.spool.epoch  # the one this connection's Hello declared
        try:
            while not (stop.is_set() or self._aborted):
                if reader.done():
                    reader.result()  # the stream's error, or its end
                    return
                wake.clear()
                room = self.max_in_flight - self._in_flight
                batches, last_sent = (
                    self._next_batches(last_sent, room, epoch) if room > 0 else ([], last_sent)
                )
                if not batches:  # new batches, acks and abort() wake it; the timeout only notices `stop`
                    waiter = asyncio.ensure_future(wake.wait())
                    await asyncio.wait(
                        (reader, waiter), timeout=IDLE_WAIT_S, return_when=asyncio.FIRST_COMPLETED
                    )
                    waiter.cancel()
                    continue
                self._in_flight += len(batches)
                self.stats.batches_sent += len(batches)
                try:
                    if bundled:
                        await call.write(pb.BatchBundle(batches=batches))
                    else:
                        for b in batches:
                            await call.write(b)
                except Exception:
                    if reader.done():  # the stream ended: why it did says more than the failed write
                        reader.result()
                    raise
        finally:
            self._call = None
            if not reader.done():
                reader.cancel()
            elif not reader.cancelled():
                reader.exception()  # retrieved: asyncio logs no "exception was never retrieved"
            call.cancel()

    def abort(self) -> None:
        """Cancel the open stream and end ``run()`` now (the agent is exiting): nothing of gRPC's is left
        waiting on a collector that does not answer when the process ends. Any thread may call it."""
        loop = self._loop
        if loop is None:
            return

        def now() -> None:
            self._aborted = True
            if self._call is not None:
                self._call.cancel()
            if self._channel is not None:  # a Hello waiting on a collector that does not answer
                asyncio.ensure_future(self._channel.close())
            if self._wake is not None:
                self._wake.set()

        try:
            loop.call_soon_threadsafe(now)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _on_ack(self, ack: pb.Ack) -> None:
        """Forget an acknowledged batch; a retryable refusal ends the stream so the batch is sent again."""
        self.stats.last_ack_monotonic_s = time.monotonic()
        if ack.code == 0:
            self.spool.ack(ack.seq)
            self.stats.batches_acked += 1
            self.stats.batches_duplicate += int(ack.duplicate)
        elif ack.code in RETRYABLE_CODES:
            raise _Reconnect(f"seq={ack.seq} {ack.message}")
        else:
            self.spool.ack(ack.seq)
            self.stats.batches_refused += 1
            log.error(
                "batch refused by collector agent=%s seq=%d code=%s reason=%s",
                self.agent_id,
                ack.seq,
                grpc.StatusCode(_code(ack.code)).name,
                ack.message,
            )


def _code(value: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code.value
    return grpc.StatusCode.UNKNOWN.value
