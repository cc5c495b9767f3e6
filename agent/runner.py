"""The agent: schedules samplers per interval, batches rows per table, spools, and sends."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from c4 import __version__
from c4.agent.batcher import ColumnBatch, TableBuffer, convert_rows, rows_to_batch, utc_from_ns
from c4.agent.client import Sender
from c4.agent.hello import build_message
from c4.agent.registry import SamplerContext, SamplerSettings, build_sampler
from c4.agent.sampler import Inventory, InventoryProvider, Sampler, SkipCounter, SkipReasons, StartupPolicy
from c4.agent.spool import Spool
from c4.agent.spool_feed import SpoolFeed
from c4.agent.worker import SamplerWorker
from c4.catalogue import Catalogue, load
from c4.client_config import AgentConfig
from c4.security import ClientSecurity
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.thread_names import name_os_thread

log = logging.getLogger("c4.agent")

#: A tick running longer than this (or two intervals, if longer) marks its sampler "stuck".
STUCK_AFTER_S = 10.0
#: A tick running on the scheduler thread longer than this is handed off: its sampler gets a thread of its
#: own (SamplerWorker) and a new scheduler thread goes on with the others. Ticks take milliseconds; a
#: thread per sampler from the start cost ~1 ms of CPU a second each in wake-ups and GIL hand-offs.
HANDOFF_AFTER_S = 1.0
#: How often the watchdog looks at the tick running on the scheduler thread.
WATCH_EVERY_S = 1.0
#: With batches waiting and no ack for this long, the agent logs that it cannot send (once per episode).
SEND_STALL_WARN_S = 60.0
#: Distinct error messages remembered per sampler for "log once" (beyond it, nothing more is logged).
MAX_LOGGED_ERRORS = 100


class AgentStartError(RuntimeError):
    """A sampler with startup policy 'error' could not start."""


@dataclass
class ScheduledSampler:
    """A sampler with its interval, startup policy and health counters."""

    sampler: Sampler
    interval_s: float
    policy: StartupPolicy
    state: str = "new"
    next_due: float = 0.0
    ticks: int = 0
    rows: int = 0
    errors: int = 0
    last_error: str = ""
    cpu_s: float = 0.0
    rows_dropped: int = 0
    overruns: int = 0  # ticks skipped because the previous one was still running
    worker: SamplerWorker | None = field(default=None, repr=False)
    _stuck_logged: bool = False
    _logged_errors: set[str] = field(default_factory=set)

    def note_error(self, message: str, key: str) -> None:
        """Count an error tick and keep its message; logged once per distinct ``key``."""
        self.errors += 1
        self.last_error = message
        if key not in self._logged_errors and len(self._logged_errors) < MAX_LOGGED_ERRORS:
            self._logged_errors.add(key)
            log.warning("sampler error sampler=%s error=%s", self.sampler.name, message)

    def stuck_after_s(self) -> float:
        """How long a tick may run before the sampler counts as stuck."""
        return max(STUCK_AFTER_S, 2 * self.interval_s)

    def probe(self) -> bool:
        """Probe the source; update state per the startup policy. True when it may be sampled."""
        try:
            self.sampler.probe()
        except Exception as exc:
            self.last_error = f"probe: {exc}"
            if self.policy is StartupPolicy.ERROR:
                raise AgentStartError(f"sampler {self.sampler.name}: {exc}") from exc
            new_state = "retrying" if self.policy is StartupPolicy.RETRY else "unavailable"
            if new_state != self.state:
                log.warning(
                    "sampler not available sampler=%s policy=%s reason=%s",
                    self.sampler.name,
                    self.policy.value,
                    exc,
                )
            self.state = new_state
            return False
        if self.state != "running":
            log.info("sampler running sampler=%s interval_s=%g", self.sampler.name, self.interval_s)
        self.state = "running"
        return True


def build_samplers(cfg: AgentConfig, ctx: SamplerContext) -> list[ScheduledSampler]:
    """Instantiate every enabled sampler from ``[agent.samplers.*]``."""
    out = []
    for name, raw in cfg.samplers.items():
        common, own = SamplerSettings.split(name, raw)
        if not common.enabled:
            continue
        sampler = build_sampler(name, own, ctx)
        out.append(ScheduledSampler(sampler, common.interval_s or cfg.interval_s, common.startup))
    return out


@dataclass(frozen=True)
class InlineTick:
    """The tick running on the scheduler thread: whose, since when, and on which scheduler generation."""

    sampler: ScheduledSampler
    started_s: float  # time.monotonic()
    generation: int


class Agent:
    """Runs samplers on a scheduler thread and a Sender on another; both stop on ``stop()``.

    Every sampler ticks on the scheduler thread, one after the other: at 1 Hz the process wakes once a
    second for all of them. A source that blocks stops only itself: a watchdog hands a tick running
    longer than HANDOFF_AFTER_S over, its sampler ticks on a thread of its own (``SamplerWorker``) from
    then on, reported as state ``stuck`` while it blocks, and a new scheduler thread goes on with
    heartbeats, health rows and the other sources.
    """

    def __init__(
        self,
        cfg: AgentConfig,
        samplers: list[ScheduledSampler],
        ctx: SamplerContext,
        catalogue: Catalogue | None = None,
        spool_fsync: bool | None = None,
    ) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.samplers = samplers
        self.catalogue = catalogue or load()
        self.spool = Spool(
            cfg.spool_dir, cfg.spool_max_bytes, fsync=cfg.spool_fsync if spool_fsync is None else spool_fsync
        )
        self.buffer = TableBuffer()
        self.batches_made = 0
        self.feed = SpoolFeed(self.spool, cfg.spool_hold_max_bytes)  # holds batches while the disk is full
        self._send_stall_logged = False
        self._hello_warned: set[str] = set()
        self._results: queue.SimpleQueue[list[tuple[str, ColumnBatch]]] = queue.SimpleQueue()
        self._stop = threading.Event()  # stops the sender
        self._stop_sampling = threading.Event()  # stops the scheduler
        self.sender = Sender(
            cfg.collector,
            cfg.effective_agent_id,
            self.spool,
            self.hello_request,
            max_in_flight=cfg.max_in_flight,
            max_message_bytes=cfg.max_batch_bytes + (1 << 20),
            backoff_initial_s=cfg.backoff_initial_s,
            backoff_max_s=cfg.backoff_max_s,
            security=ClientSecurity.from_config(cfg),
        )
        self._threads: list[threading.Thread] = []  # the sender and the watchdog
        self._scheduler: threading.Thread | None = None  # the current scheduler thread
        self._handoff = threading.Lock()  # guards _inline and _generation between scheduler and watchdog
        self._inline: InlineTick | None = None
        self._generation = 0  # the current scheduler thread's; a handed-off one ends when its tick returns
        self.handoffs = 0

    # --- Hello ---------------------------------------------------------------
    def inventory(self) -> Inventory:
        """What the running samplers found on this node."""
        inv = Inventory()
        for s in self.samplers:
            if s.state == "running" and isinstance(s.sampler, InventoryProvider):
                try:
                    s.sampler.inventory(inv)
                except Exception as exc:
                    log.warning("inventory failed sampler=%s error=%s", s.sampler.name, exc)
        return inv

    def hello_request(self) -> pb.HelloRequest:
        """The registration message sent on every (re)connect."""
        inv = self.inventory()
        tables = {t for s in self.samplers for t in s.sampler.tables} | {
            "agent_health",
            "agent_sampler_health",
        }
        return pb.HelloRequest(
            agent_id=self.cfg.effective_agent_id,
            hostname=self.ctx.node,
            agent_version=__version__,
            job=self.ctx.job,
            labels=_hello_labels(self.ctx.labels, self._hello_warned),
            gpus=[build_message(pb.Gpu, g, self._hello_warned) for g in inv.gpus],
            nics=[build_message(pb.NicPort, n, self._hello_warned) for n in inv.nics],
            table_versions={t: self.catalogue[t].version for t in tables if t in self.catalogue},
        )

    # --- sampling ------------------------------------------------------------
    def defaults(self, now_ns: int) -> dict[str, Any]:
        """Columns the agent fills when a sampler leaves them out."""
        return {"ts": utc_from_ns(now_ns), "node": self.ctx.node, "job": self.ctx.job}

    def tick_tables(self, s: ScheduledSampler, now_ns: int) -> list[tuple[str, ColumnBatch]]:
        """One tick of one sampler as typed tables; errors are counted, never raised.

        Rows that do not fit their table are left out one by one (``rows_dropped``), the rest kept."""
        cpu0 = time.thread_time()
        try:
            try:
                out = s.sampler.sample(now_ns)
                items = [(t, rows) for t, rows in out.items() if rows]
            except Exception as exc:
                s.note_error(str(exc), type(exc).__name__ + str(exc)[:80])
                return []
            defaults = self.defaults(now_ns)
            tables: list[tuple[str, ColumnBatch]] = []
            dropped, first_error = 0, ""
            for t, rows in items:
                try:
                    conv = convert_rows(self.catalogue, t, rows, defaults)
                except Exception as exc:  # an unknown table: none of its rows can be stored
                    dropped += len(rows)
                    first_error = first_error or str(exc)
                    continue
                if conv.dropped:
                    dropped += conv.dropped
                    first_error = first_error or conv.first_error
                if conv.batch.num_rows:
                    tables.append((t, conv.batch))
            if dropped:
                s.rows_dropped += dropped
                s.note_error(first_error, "rows:" + first_error.split(":")[0])
            s.rows += sum(data.num_rows for _, data in tables)
            s.ticks += 1
            return tables
        finally:
            s.cpu_s += time.thread_time() - cpu0

    def sample_one(self, s: ScheduledSampler, now_ns: int) -> None:
        """One tick of one sampler into the buffer, on the calling thread (tests, benchmarks)."""
        for t, data in self.tick_tables(s, now_ns):
            self.buffer.add(t, data)

    def busy_for_s(self, s: ScheduledSampler) -> float:
        """Seconds the sampler's current tick has been running (0.0 when none runs)."""
        if s.worker is not None:
            return s.worker.busy_for_s()
        tick = self._inline
        return time.monotonic() - tick.started_s if tick is not None and tick.sampler is s else 0.0

    def sampler_state(self, s: ScheduledSampler) -> str:
        """The state health rows report: the sampler's own, or ``stuck`` while a tick runs too long."""
        if self.busy_for_s(s) > s.stuck_after_s():
            return "stuck"
        return s.state

    def _submit(self, s: ScheduledSampler, now_ns: int) -> None:
        """Start a tick on the sampler's own thread; skipped (counted) while the last one still runs."""
        if s.worker is None:
            s.worker = SamplerWorker(s.sampler.name)

        def job() -> None:
            if s.state == "retrying" and not s.probe():
                return
            tables = self.tick_tables(s, now_ns)
            if tables:
                self._results.put(tables)

        if not s.worker.submit(job):
            s.overruns += 1

    def _tick_inline(self, s: ScheduledSampler, now_ns: int, generation: int) -> bool:
        """One tick on the scheduler thread; False when the watchdog handed it off meanwhile (this thread
        is no longer the scheduler and ends, its tick's rows passed on to the new one)."""
        with self._handoff:
            self._inline = InlineTick(s, time.monotonic(), generation)
        tables: list[tuple[str, ColumnBatch]] = []
        try:
            if s.state != "retrying" or s.probe():
                tables = self.tick_tables(s, now_ns)
        except Exception:  # a tick handles its own errors; this is the last line of defence
            log.exception("sampler tick failed outside its error handling sampler=%s", s.sampler.name)
        with self._handoff:
            self._inline = None
            handed_off = generation != self._generation
        if handed_off:
            if tables:
                self._results.put(tables)
            if s.worker is not None:
                s.worker.tick_returned()
            log.warning("sampler tick returned after a hand-off sampler=%s", s.sampler.name)
            return False
        for t, data in tables:
            self.buffer.add(t, data)
        return True

    def _watch(self) -> None:
        """The watchdog: hands a tick blocking the scheduler thread over to a thread of its sampler's own."""
        name_os_thread("c4-watchdog")
        while not self._stop_sampling.wait(WATCH_EVERY_S):
            with self._handoff:
                tick = self._inline
                if (
                    tick is None
                    or tick.generation != self._generation
                    or time.monotonic() - tick.started_s < HANDOFF_AFTER_S
                    or self._stop_sampling.is_set()  # stop() joins the scheduler it finds: start no other
                ):
                    continue
                s = tick.sampler
                s.worker = SamplerWorker(s.sampler.name, busy_since=tick.started_s)
                self._generation += 1
                self._inline = None
                self.handoffs += 1
                self._start_scheduler(self._generation)
            log.warning(
                "sampler tick blocks, it goes on on a thread of its own sampler=%s busy_s=%.1f",
                s.sampler.name,
                time.monotonic() - tick.started_s,
            )

    def _start_scheduler(self, generation: int) -> None:
        self._scheduler = threading.Thread(
            target=self._schedule, args=(generation,), name="c4-scheduler", daemon=True
        )
        self._scheduler.start()

    def _watch_stuck(self) -> None:
        """Log once when a sampler's tick has been running too long, and once when it comes back."""
        for s in self.samplers:
            busy_s = self.busy_for_s(s)
            if busy_s > s.stuck_after_s() and not s._stuck_logged:
                s._stuck_logged = True
                s.errors += 1
                s.last_error = f"stuck: a tick has not returned for {busy_s:.0f} s (the source blocks)"
                log.error(
                    "sampler stuck, its source blocks; the others go on sampler=%s busy_s=%.1f",
                    s.sampler.name,
                    busy_s,
                )
            elif s._stuck_logged and busy_s <= s.stuck_after_s():
                s._stuck_logged = False
                log.warning("sampler recovered sampler=%s skipped_ticks=%d", s.sampler.name, s.overruns)

    def _collect(self) -> None:
        """Tables of finished ticks into the buffer."""
        while True:
            try:
                tables = self._results.get_nowait()
            except queue.Empty:
                return
            for t, data in tables:
                self.buffer.add(t, data)

    def health_rows(self, now_ns: int) -> None:
        """The agent's own health into the buffer."""
        st = self.sender.stats
        since_ack_s = max(0.0, time.monotonic() - st.last_ack_monotonic_s)
        self._warn_send_stall(since_ack_s, st.last_send_error)
        agent_row = {
            "agent_id": self.cfg.effective_agent_id,
            "batches_made": self.batches_made,
            "batches_sent": st.batches_sent,
            "batches_acked": st.batches_acked,
            "batches_refused": st.batches_refused,
            "batches_dropped": self.spool.dropped,
            "spool_batches": len(self.spool),
            "spool_bytes": self.spool.bytes,
            "connected": st.connected,
            "reconnects": st.reconnects,
            "batches_held": self.feed.held,
            "batches_unspooled": self.feed.unspooled,
            "spool_error": self.feed.error,
            "send_errors": st.send_errors,
            "last_send_error": st.last_send_error,
            "since_last_ack_s": since_ack_s,
        }
        sampler_rows = [
            {
                "sampler": s.sampler.name,
                "state": self.sampler_state(s),
                "ticks": s.ticks,
                "rows": s.rows,
                "errors": s.errors,
                "last_error": s.last_error,
                "cpu_s": s.cpu_s,
                "rows_dropped": s.rows_dropped,
                "records_skipped": s.sampler.records_skipped if isinstance(s.sampler, SkipCounter) else 0,
                "records_skipped_by_reason": json.dumps(
                    dict(s.sampler.skipped_by_reason) if isinstance(s.sampler, SkipReasons) else {},
                    sort_keys=True,
                ),
            }
            for s in self.samplers
        ]
        d = self.defaults(now_ns)
        self.buffer.add("agent_health", rows_to_batch(self.catalogue, "agent_health", [agent_row], d))
        self.buffer.add(
            "agent_sampler_health", rows_to_batch(self.catalogue, "agent_sampler_health", sampler_rows, d)
        )

    def _warn_send_stall(self, since_ack_s: float, last_error: str) -> None:
        """Log once per episode that batches wait and nothing has been acknowledged for long."""
        if since_ack_s > SEND_STALL_WARN_S and len(self.spool):
            if not self._send_stall_logged:
                self._send_stall_logged = True
                log.error(
                    "agent cannot send: no batch acknowledged for %.0f s collector=%s spool_batches=%d "
                    "last_send_error=%s",
                    since_ack_s,
                    self.cfg.collector,
                    len(self.spool),
                    last_error or "-",
                )
        elif self._send_stall_logged and since_ack_s <= SEND_STALL_WARN_S:
            self._send_stall_logged = False
            log.info("agent sending again collector=%s", self.cfg.collector)

    # --- spooling --------------------------------------------------------------
    @property
    def spool_error(self) -> str:
        """Why the spool cannot be written now ('' while it can)."""
        return self.feed.error

    @property
    def held_batches(self) -> int:
        """Batches waiting in memory for the spool to be writable again."""
        return self.feed.held

    @property
    def batches_unspooled(self) -> int:
        """Batches lost because the spool stayed unwritable longer than the memory hold lasted."""
        return self.feed.unspooled

    def flush(self) -> int:
        """Buffered rows -> sized Arrow IPC batches in the spool; returns batches made.

        A batch the spool cannot take (its disk is full) is held in memory, up to spool_hold_max_bytes,
        and spooled in order on a later flush (SpoolFeed)."""
        batches = [
            (table, self.catalogue[table].version, payload)
            for table, data in self.buffer.drain()
            for payload in data.to_ipc(self.cfg.max_batch_bytes)
        ]
        self.batches_made += len(batches)
        self.feed.feed(batches)
        return len(batches)

    # --- running ---------------------------------------------------------------
    def start_samplers(self) -> None:
        """Probe every sampler once (raises AgentStartError for policy 'error')."""
        for s in self.samplers:
            s.probe()

    def _awaiting_acks(self) -> bool:
        """Connected, and batches of earlier flushes are not acknowledged yet. (Away from the collector
        the agent flushes on time: its rows are spooled, not held in memory, however long it lasts.)"""
        return self.sender.stats.connected and len(self.spool) > 0

    def flush_interval_s(self) -> float:
        """How often to flush now: the configured interval, or the collector's advice when longer (a
        collector that falls behind asks for fewer, larger batches; samples keep their interval)."""
        advice_s = self.sender.flush_advice_s if self.cfg.follow_flush_advice and self.sender else 0.0
        return max(self.cfg.flush_interval_s, advice_s)

    def _schedule(self, generation: int = 0) -> None:
        name_os_thread("c4-scheduler")
        now = time.monotonic()
        flush_every_s = self.flush_interval_s()
        own_phase = flush_phase(self.cfg.effective_agent_id)  # where a new flush interval starts, in it
        next_flush = now + flush_every_s
        last_flush = now
        next_health = now
        while not self._stop_sampling.is_set():
            now = time.monotonic()
            now_ns = time.time_ns()
            for s in self.samplers:
                if now < s.next_due:
                    continue
                s.next_due = now + s.interval_s
                if s.state not in ("running", "retrying"):
                    continue
                if s.worker is not None:  # its source blocked once: it ticks on its own thread
                    self._submit(s, now_ns)
                elif not self._tick_inline(s, now_ns, generation):
                    return  # handed off: a new scheduler thread took over
            self._watch_stuck()
            if now >= next_health:
                self._collect()
                self.health_rows(now_ns)
                next_health = now + self.cfg.health_interval_s
            every_s = self.flush_interval_s()
            if every_s > flush_every_s:
                # the collector asked for a longer interval: the next flush moves out to this agent's phase
                # of it now, rather than after one more at the old interval (a raise then lowers the
                # collector's load at once, and an agent that joins a busy collector does not flush a
                # second after its Hello before it follows the advice)
                next_flush = max(next_flush, last_flush + every_s * own_phase)
                flush_every_s = every_s
            if now >= next_flush:
                if self._awaiting_acks() and now + self.cfg.interval_s - last_flush <= max(
                    self.cfg.flush_wait_max_s, every_s
                ):
                    # the collector has not acknowledged the last flush yet (it falls behind): gather
                    # another tick into this one instead of queueing a small batch more behind it
                    next_flush = now + self.cfg.interval_s
                else:
                    self._collect()
                    self._flush_logged()
                    last_flush = now
                    # a new interval (the collector's advice) starts at this agent's own phase of it:
                    # agents that all took the advice within a second would else flush in the same second
                    phase = 1.0 if every_s == flush_every_s else own_phase
                    flush_every_s = every_s
                    next_flush = now + every_s * phase
            due = min(
                [s.next_due for s in self.samplers if s.state != "unavailable"] + [next_flush, next_health]
            )
            self._stop_sampling.wait(max(0.0, due - time.monotonic()))
        deadline = time.monotonic() + 1.0  # let running ticks finish; a stuck one is left behind
        for s in self.samplers:
            if s.worker is not None:
                s.worker.wait_idle(max(0.0, deadline - time.monotonic()))
                s.worker.stop()
        self._collect()
        self.health_rows(time.time_ns())
        self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # never let one bad flush end the scheduler
            log.exception("flush failed dir=%s error=%s", self.cfg.spool_dir, exc)

    def _send(self) -> None:
        """The sender's thread (gRPC's threads it starts take its OS name: their CPU counts as sending)."""
        name_os_thread("c4-sender")
        self.sender.run(self._stop)

    def start(self) -> None:
        """Probe samplers and start the scheduler and sender threads."""
        self.start_samplers()
        self._threads = [
            threading.Thread(target=self._send, name="c4-sender", daemon=True),
            threading.Thread(target=self._watch, name="c4-watchdog", daemon=True),
        ]
        self._start_scheduler(self._generation)
        for t in self._threads:
            t.start()
        log.info(
            "agent started agent=%s node=%s collector=%s samplers=%s",
            self.cfg.effective_agent_id,
            self.ctx.node,
            self.cfg.collector,
            ",".join(s.sampler.name for s in self.samplers),
        )

    def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Stop sampling, give the sender a moment to drain the spool, then stop it."""
        deadline = time.monotonic() + drain_timeout_s
        self._stop_sampling.set()  # the scheduler flushes what it holds, then ends; so does the watchdog
        with self._handoff:
            scheduler = self._scheduler  # the watchdog starts no other once sampling is stopped
        if scheduler is not None:
            scheduler.join(timeout=drain_timeout_s)
        while len(self.spool) and self.sender.stats.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self.sender.abort()  # the drain is over: a stream still open would only delay the exit
        for t in self._threads:
            t.join(timeout=drain_timeout_s)
        for s in self.samplers:
            try:
                s.sampler.close()
            except Exception as exc:
                log.warning("sampler close failed sampler=%s error=%s", s.sampler.name, exc)
        self.spool.close()
        self.feed.close()
        log.info("agent stopped agent=%s spooled=%d", self.cfg.effective_agent_id, len(self.spool))


def flush_phase(agent_id: str) -> float:
    """An agent's fixed fraction of a flush interval, in (0, 1] (from its id): where a new interval starts."""
    return (zlib.crc32(agent_id.encode()) % 1000 + 1) / 1000


def _hello_labels(labels: dict[str, str], warned: set[str]) -> dict[str, str]:
    """Labels a protobuf string map can carry (text that is valid Unicode); others left out, logged once."""
    out = {}
    for k, v in labels.items():
        try:
            str(k).encode()
            str(v).encode()
        except UnicodeEncodeError:
            if f"label:{k!r}" not in warned:
                warned.add(f"label:{k!r}")
                log.warning("label dropped from Hello (not valid text) label=%r", k)
            continue
        out[str(k)] = str(v)
    return out
