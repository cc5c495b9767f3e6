"""The agent: schedules samplers per interval, batches rows per table, spools, and sends."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from c4 import __version__
from c4.agent.batcher import RowError, TableBuffer, rows_to_table, split_ipc, utc_from_ns
from c4.agent.client import Sender
from c4.agent.registry import SamplerContext, SamplerSettings, build_sampler
from c4.agent.sampler import Inventory, InventoryProvider, Sampler, StartupPolicy
from c4.agent.spool import Spool
from c4.catalogue import Catalogue, load
from c4.config import AgentConfig
from c4.security import ClientSecurity
from c4.telemetry.v1 import telemetry_pb2 as pb

log = logging.getLogger("c4.agent")


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
    _logged_errors: set[str] = field(default_factory=set)

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
        common = SamplerSettings.model_validate(raw)
        if not common.enabled:
            continue
        own = {k: v for k, v in raw.items() if k not in SamplerSettings.model_fields}
        sampler = build_sampler(name, own, ctx)
        out.append(ScheduledSampler(sampler, common.interval_s or cfg.interval_s, common.startup))
    return out


class Agent:
    """Runs samplers on a scheduler thread and a Sender on another; both stop on ``stop()``."""

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
        self._threads: list[threading.Thread] = []

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
            labels=self.ctx.labels,
            gpus=[
                pb.Gpu(**{k: v for k, v in g.items() if k in pb.Gpu.DESCRIPTOR.fields_by_name})
                for g in inv.gpus
            ],
            nics=[
                pb.NicPort(**{k: v for k, v in n.items() if k in pb.NicPort.DESCRIPTOR.fields_by_name})
                for n in inv.nics
            ],
            table_versions={t: self.catalogue[t].version for t in tables if t in self.catalogue},
        )

    # --- sampling ------------------------------------------------------------
    def defaults(self, now_ns: int) -> dict[str, Any]:
        """Columns the agent fills when a sampler leaves them out."""
        return {"ts": utc_from_ns(now_ns), "node": self.ctx.node, "job": self.ctx.job}

    def sample_one(self, s: ScheduledSampler, now_ns: int) -> None:
        """One tick of one sampler into the buffer; errors are counted, never raised."""
        cpu0 = time.thread_time()
        try:
            out = s.sampler.sample(now_ns)
            defaults = self.defaults(now_ns)
            tables = [
                (t, rows_to_table(self.catalogue, t, rows, defaults)) for t, rows in out.items() if rows
            ]
        except (RowError, Exception) as exc:
            s.errors += 1
            s.last_error = str(exc)
            key = type(exc).__name__ + str(exc)[:80]
            if key not in s._logged_errors:  # one line per distinct error, not one per tick
                s._logged_errors.add(key)
                log.warning("sampler error sampler=%s error=%s", s.sampler.name, exc)
            return
        finally:
            s.cpu_s += time.thread_time() - cpu0
        for t, data in tables:
            self.buffer.add(t, data)
            s.rows += data.num_rows
        s.ticks += 1

    def health_rows(self, now_ns: int) -> None:
        """The agent's own health into the buffer."""
        st = self.sender.stats
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
        }
        sampler_rows = [
            {
                "sampler": s.sampler.name,
                "state": s.state,
                "ticks": s.ticks,
                "rows": s.rows,
                "errors": s.errors,
                "last_error": s.last_error,
                "cpu_s": s.cpu_s,
            }
            for s in self.samplers
        ]
        d = self.defaults(now_ns)
        self.buffer.add("agent_health", rows_to_table(self.catalogue, "agent_health", [agent_row], d))
        self.buffer.add(
            "agent_sampler_health", rows_to_table(self.catalogue, "agent_sampler_health", sampler_rows, d)
        )

    def flush(self) -> int:
        """Buffered rows -> sized Arrow IPC batches in the spool; returns batches made."""
        made = 0
        for table, data in self.buffer.drain():
            version = self.catalogue[table].version
            for payload in split_ipc(data, self.cfg.max_batch_bytes):
                self.spool.append(table, version, payload)
                made += 1
        self.batches_made += made
        return made

    def start_samplers(self) -> None:
        """Probe every sampler once (raises AgentStartError for policy 'error')."""
        for s in self.samplers:
            s.probe()

    def _schedule(self) -> None:
        now = time.monotonic()
        next_flush = now + self.cfg.flush_interval_s
        next_health = now
        while not self._stop_sampling.is_set():
            now = time.monotonic()
            now_ns = time.time_ns()
            for s in self.samplers:
                if now < s.next_due:
                    continue
                s.next_due = now + s.interval_s
                if s.state == "running" or (s.state == "retrying" and s.probe()):
                    self.sample_one(s, now_ns)
            if now >= next_health:
                self.health_rows(now_ns)
                next_health = now + self.cfg.health_interval_s
            if now >= next_flush:
                try:
                    self.flush()
                except OSError as exc:
                    log.error("spool write failed dir=%s error=%s", self.cfg.spool_dir, exc)
                next_flush = now + self.cfg.flush_interval_s
            due = min(
                [s.next_due for s in self.samplers if s.state != "unavailable"] + [next_flush, next_health]
            )
            self._stop_sampling.wait(max(0.0, due - time.monotonic()))
        self.health_rows(time.time_ns())
        self.flush()

    def start(self) -> None:
        """Probe samplers and start the scheduler and sender threads."""
        self.start_samplers()
        self._threads = [
            threading.Thread(target=self._schedule, name="c4-scheduler", daemon=True),
            threading.Thread(target=self.sender.run, args=(self._stop,), name="c4-sender", daemon=True),
        ]
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
        self._stop_sampling.set()  # the scheduler flushes what it holds, then ends
        if self._threads:
            self._threads[0].join(timeout=drain_timeout_s)
        while len(self.spool) and self.sender.stats.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        for t in self._threads[1:]:
            t.join(timeout=drain_timeout_s)
        for s in self.samplers:
            try:
                s.sampler.close()
            except Exception as exc:
                log.warning("sampler close failed sampler=%s error=%s", s.sampler.name, exc)
        self.spool.close()
        log.info("agent stopped agent=%s spooled=%d", self.cfg.effective_agent_id, len(self.spool))
