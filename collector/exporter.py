"""Prometheus ``/metrics`` for the collector: health gauges from the latest rows, open faults, own counters.

Each scrape runs in the HTTP server's thread on its own DuckDB cursor, never on the asyncio loop.
Metric names follow Prometheus conventions: ``c4_`` prefix, base units (bytes, seconds, hertz,
ratios 0-1), ``_total`` counters. Rows older than ``metrics_window_s`` are not exported, so a
silent node disappears from the gauges while ``c4_agent_last_batch_age_seconds`` shows it; rows
more than ``max_clock_skew_s`` ahead of the collector's clock are not "latest" either, so one row
from a node whose clock ran ahead cannot pin its gauges.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from c4.collector.store import SEQ_TABLE
from c4.config import split_host_port
from c4.thread_names import name_os_thread

if TYPE_CHECKING:
    from c4.collector.server import Collector

log = logging.getLogger("c4.collector.exporter")


@dataclass(frozen=True)
class Series:
    """One exported metric: its name, type, the SQL expression of a latest row, and help."""

    name: str
    kind: str  # "gauge" or "counter" (name then ends in _total)
    expr: str  # over the latest row's columns, e.g. "util_gpu_pct / 100.0"
    help: str


@dataclass(frozen=True)
class LatestRows:
    """Metrics from the latest row per key of one table (within the freshness window)."""

    table: str
    keys: tuple[tuple[str, str], ...]  # (label, column)
    series: tuple[Series, ...]
    windowed: bool = True


def _g(name: str, expr: str, help: str) -> Series:
    return Series(name, "gauge", expr, help)


def _c(name: str, expr: str, help: str) -> Series:
    return Series(name, "counter", expr, help)


#: Health gauges and raw counters per node, GPU, NIC port and netdev.
LATEST: tuple[LatestRows, ...] = (
    LatestRows(
        "nodes",
        (("node", "node"),),
        (
            _g("c4_node_gpus", "gpu_count", "GPUs the node's agent found at its last Hello."),
            _g("c4_node_nic_ports", "nic_port_count", "NIC ports the node's agent found at its last Hello."),
        ),
        windowed=False,
    ),
    LatestRows(
        "host_memory",
        (("node", "node"),),
        (
            _g("c4_node_memory_total_bytes", "mem_total_bytes", "Host memory (MemTotal)."),
            _g("c4_node_memory_available_bytes", "mem_available_bytes", "Host memory available."),
            _g("c4_node_load1", "load1", "1-minute load average."),
        ),
    ),
    LatestRows(
        "gpu_samples",
        (("node", "node"), ("gpu", "gpu_index")),
        (
            _g("c4_gpu_utilization_ratio", "util_gpu_pct / 100.0", "GPU (SM busy) utilization, 0-1."),
            _g(
                "c4_gpu_memory_utilization_ratio",
                "util_mem_pct / 100.0",
                "Memory controller utilization, 0-1.",
            ),
            _g("c4_gpu_memory_used_bytes", "mem_used_bytes", "Framebuffer memory used."),
            _g("c4_gpu_memory_total_bytes", "mem_total_bytes", "Framebuffer memory total."),
            _g("c4_gpu_power_watts", "power_w", "Power draw."),
            _g("c4_gpu_temperature_celsius", "temp_gpu_c", "GPU die temperature."),
            _g("c4_gpu_memory_temperature_celsius", "temp_mem_c", "HBM temperature."),
            _g("c4_gpu_sm_clock_hertz", "clock_sm_mhz * 1e6", "SM clock."),
            _g(
                "c4_gpu_clocks_event_reasons",
                "clocks_event_reasons",
                "Why clocks are held down (NVML bitmask).",
            ),
            _g("c4_gpu_pcie_link_width", "pcie_width_cur", "Current PCIe link width, lanes."),
            _g("c4_gpu_pcie_link_max_width", "pcie_width_max", "Maximum PCIe link width, lanes."),
            _g(
                "c4_gpu_remapped_rows_pending",
                "remapped_rows_pending",
                "1 if a row remap waits for a GPU reset.",
            ),
            _g(
                "c4_gpu_remapped_rows_failure",
                "remapped_rows_failure",
                "1 if a row remap failed: replace the GPU.",
            ),
            _c(
                "c4_gpu_ecc_corrected_errors_total",
                "ecc_sbe_volatile",
                "Corrected ECC errors since driver load.",
            ),
            _c(
                "c4_gpu_ecc_uncorrected_errors_total",
                "ecc_dbe_volatile",
                "Uncorrected ECC errors since driver load.",
            ),
            _c("c4_gpu_pcie_replays_total", "pcie_replay_count", "PCIe replays."),
            _c("c4_gpu_energy_joules_total", "energy_mj / 1000.0", "Energy since driver load."),
        ),
    ),
    LatestRows(
        "ib_port_samples",
        (("node", "node"), ("device", "device"), ("port", "port")),
        (
            _g("c4_nic_port_up", "CASE WHEN state_code = 4 THEN 1 ELSE 0 END", "1 if the port is ACTIVE."),
            _g("c4_nic_port_state_code", "state_code", "Logical port state (4 ACTIVE, 1 DOWN)."),
            _g("c4_nic_port_rate_bytes_per_second", "rate_bps / 8.0", "Negotiated link rate."),
            _c("c4_nic_port_transmit_bytes_total", "tx_bytes", "Bytes transmitted."),
            _c("c4_nic_port_receive_bytes_total", "rx_bytes", "Bytes received."),
            _c("c4_nic_port_receive_errors_total", "rx_errors", "Receive errors."),
            _c("c4_nic_port_transmit_discards_total", "tx_discards", "Transmit discards."),
            _c("c4_nic_port_symbol_errors_total", "symbol_errors", "Physical symbol errors (cable/optics)."),
            _c("c4_nic_port_link_downed_total", "link_downed", "Times the link went down."),
            _c("c4_nic_port_local_ack_timeouts_total", "local_ack_timeout_err", "Transport ACK timeouts."),
            _c("c4_nic_port_out_of_sequence_total", "out_of_sequence", "Out-of-sequence packets received."),
            _c(
                "c4_nic_port_adaptive_retransmissions_total",
                "roce_adp_retrans",
                "RoCE adaptive retransmissions.",
            ),
            _c(
                "c4_nic_port_ecn_marked_packets_total",
                "np_ecn_marked_roce_packets",
                "RoCE packets received ECN-marked.",
            ),
            _c(
                "c4_nic_port_cnp_handled_total",
                "rp_cnp_handled",
                "CNPs handled (this port was told to slow down).",
            ),
        ),
    ),
    LatestRows(
        "agent_clock",
        (("agent_id", "agent_id"),),
        (
            _g(
                "c4_agent_clock_skew_seconds",
                "skew_s",
                "How far the agent's clock runs ahead of the collector's (newest row ts minus receive time).",
            ),
            _g(
                "c4_agent_clock_clamped_rows",
                "rows_clamped",
                "Rows of the agent's latest clock interval dated beyond max_clock_skew_s, stored at receive time.",
            ),
        ),
    ),
    LatestRows(
        "netdev_samples",
        (("node", "node"), ("netdev", "netdev")),
        (
            _g("c4_netdev_up", "CASE WHEN operstate = 'up' THEN 1 ELSE 0 END", "1 if operstate is up."),
            _g("c4_netdev_carrier", "carrier", "1 if the link has carrier."),
            _g("c4_netdev_speed_bytes_per_second", "speed_mbps * 125000.0", "Link speed."),
            _c("c4_netdev_carrier_changes_total", "carrier_changes", "Carrier up/down transitions."),
            _c("c4_netdev_receive_errors_total", "rx_errors", "Receive errors."),
            _c("c4_netdev_transmit_errors_total", "tx_errors", "Transmit errors."),
        ),
    ),
)

#: Collector counters with their own metric name; any other counter becomes c4_collector_<name>_total.
COUNTER_NAMES = {
    "bytes_received": ("c4_collector_received_bytes_total", "Batch payload bytes received."),
    "batches_received": ("c4_collector_batches_received_total", "Batches received on Push streams."),
    "batches_committed": ("c4_collector_batches_committed_total", "Batches committed."),
    "batches_duplicate": (
        "c4_collector_batches_duplicate_total",
        "Batches already committed before (re-sends).",
    ),
    "rows_committed": ("c4_collector_rows_committed_total", "Rows committed."),
    "commit_errors": ("c4_collector_commit_errors_total", "Batches whose commit failed (agent retries)."),
    "commit_transactions": ("c4_collector_commit_transactions_total", "DuckDB transactions committed."),
    "push_streams": ("c4_collector_push_streams_total", "Push streams opened."),
    "hellos": ("c4_collector_hellos_total", "Agent Hellos (connections)."),
    "queries": ("c4_collector_queries_total", "Query RPCs."),
}


def latest_sql(spec: LatestRows) -> str:
    """SQL for the latest non-NULL value of each series per key (``?`` = the window's start if windowed, its end)."""
    keys = ", ".join(f'"{col}"' for _, col in spec.keys)
    values = ", ".join(
        f"arg_max({s.expr}, ts) FILTER (WHERE ({s.expr}) IS NOT NULL) AS v{i}"
        for i, s in enumerate(spec.series)
    )
    where = "WHERE ts >= ? AND ts <= ?" if spec.windowed else "WHERE ts <= ?"
    return f'SELECT {keys}, {values} FROM "{spec.table}" {where} GROUP BY ALL'


OPEN_FAULTS_SQL = """
SELECT fault_class, component_type, component, detector, state, count(*) AS n
FROM faults_current WHERE state IN ('open', 'acknowledged') GROUP BY ALL
"""

#: Each fault's recovery durations from onset (the fault_recovery view), with its class.
RECOVERY_SQL = """
SELECT c.fault_class, r.time_to_detect_s, r.time_to_isolate_s, r.time_to_recover_s
FROM fault_recovery r JOIN faults_current c USING (fault_id)
"""

#: Histogram bucket bounds of the recovery durations, in seconds: half a second (a detector's pass) to
#: four hours (a manual diagnosis).
RECOVERY_BUCKETS_S = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)

#: The histograms of the recovery timeline: (metric name, fault_recovery column index in RECOVERY_SQL, help).
RECOVERY_HISTOGRAMS = (
    (
        "c4_fault_time_to_detect_seconds",
        1,
        "Seconds from a fault's onset (first anomalous sample) to its detection.",
    ),
    (
        "c4_fault_time_to_isolate_seconds",
        2,
        "Seconds from a fault's onset to its node's isolation (command ran OK; dry runs not counted).",
    ),
    (
        "c4_fault_time_to_recover_seconds",
        3,
        "Seconds from a fault's onset to its job back at its normal iteration period (observed).",
    ),
)


def histogram_buckets(values: list[float], bounds: tuple[float, ...]) -> list[tuple[str, int]]:
    """Cumulative (le, count) pairs of ``values`` over ``bounds`` and +Inf, as Prometheus histograms count."""
    out = [(repr(float(b)), sum(1 for v in values if v <= b)) for b in bounds]
    return [*out, ("+Inf", len(values))]


#: Per agent of this collector: its committed-sequence bookkeeping (a lake shard has its own table; the
#: newest row counts, since a new spool epoch starts the sequence over).
LIVENESS_SQL = "SELECT agent_id, max(updated), arg_max(last_seq, updated) FROM {table} GROUP BY agent_id"


#: Longest label value exported; longer values (and control characters) come from rows no check bounded.
MAX_LABEL_CHARS = 256


def label_value(value: object) -> str:
    """A label value safe for the exposition format: printable, at most MAX_LABEL_CHARS characters."""
    text = "" if value is None else str(value)
    if len(text) > MAX_LABEL_CHARS:
        text = text[:MAX_LABEL_CHARS] + "..."
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "\ufffd" for c in text)
    return text


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class C4Metrics:
    """A prometheus_client custom collector over a running Collector (``collect()`` per scrape).

    The collector's own counters are read at every scrape. The families computed from the store (latest
    rows, faults, recovery, liveness) are too, unless ``store_cache_s`` > 0 (on a lake: there each of
    their queries plans over the lake's catalog and files, and one scrape took over 10 s on a loaded
    host): then a scrape serves the last computed ones and, when they are older than ``store_cache_s``,
    has a background thread compute them again (one at a time), so no scrape waits on the lake but
    the very first; ``c4_exporter_store_metrics_age_seconds`` says how old the served ones are.
    """

    def __init__(
        self, collector: Collector, window_s: float, max_skew_s: float = 300.0, store_cache_s: float = 0.0
    ) -> None:
        self.collector = collector
        self.window_s = window_s
        self.max_skew_s = max_skew_s  # rows further ahead of the collector's clock are not the latest
        self.store_cache_s = store_cache_s
        self._lock = threading.Lock()  # one computation at a time: the queries share the store
        self._cached: tuple[float, list[Metric]] | None = None  # (monotonic time computed, families)
        self._refreshing = threading.Event()  # a background refresh is running
        self._closed = False  # the store is about to close: no new computation starts
        self.query_errors = 0

    def close(self, timeout_s: float = 30.0) -> bool:
        """Start no computation from the store again and wait for the running one (a scrape's or the
        background refresh's) to end, so the store can close under no query: DuckDB aborts the process
        when its connection closes under a running one. False when it did not end within ``timeout_s``."""
        self._closed = True
        if not self._lock.acquire(timeout=timeout_s):
            log.warning("metrics computation still running at close timeout_s=%s", timeout_s)
            return False
        self._lock.release()
        return True

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the registry then never calls collect() at registration."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every metric family: the counters now, the store's families now or from the cache."""
        started = time.monotonic()
        families = list(self._counters())
        computed_at, stored = self._store_families()
        scrape = GaugeMetricFamily("c4_exporter_scrape_duration_seconds", "Time this scrape took to compute.")
        scrape.add_metric([], time.monotonic() - started)
        age = GaugeMetricFamily(
            "c4_exporter_store_metrics_age_seconds",
            "How old the metrics computed from the store are (0 unless cached: metrics_lake_cache_s on a lake).",
        )
        age.add_metric([], max(0.0, time.monotonic() - computed_at))
        errors = CounterMetricFamily(
            "c4_exporter_query_errors", "Exporter queries that failed (see the log)."
        )
        errors.add_metric([], self.query_errors)
        yield from families
        yield from stored
        yield scrape
        yield age
        yield errors

    def _store_families(self) -> tuple[float, list[Metric]]:
        """(when computed, the families from the store): fresh, or cached and refreshed in the background."""
        cached = self._cached
        if self.store_cache_s <= 0 or cached is None:
            with self._lock:
                cached = self._cached
                if self._closed:  # shutting down: what was computed, or nothing
                    return cached or (time.monotonic(), [])
                if (
                    self.store_cache_s <= 0 or cached is None
                ):  # a concurrent first scrape computed it meanwhile
                    cached = (time.monotonic(), self._compute_store_families())
                    self._cached = cached
            return cached
        stale = time.monotonic() - cached[0] >= self.store_cache_s
        if stale and not self._closed and not self._refreshing.is_set():
            self._refreshing.set()
            threading.Thread(target=self._refresh, name="c4-metrics-refresh", daemon=True).start()
        return cached

    def _refresh(self) -> None:
        """Compute the store's families again (a background thread) and serve them from now on."""
        name_os_thread("c4-metrics")
        try:
            with self._lock:
                if not self._closed:
                    self._cached = (time.monotonic(), self._compute_store_families())
        except Exception:  # noqa: BLE001 - the stale families stay served; the next scrape tries again
            log.exception("metrics refresh failed")
        finally:
            self._refreshing.clear()

    def _compute_store_families(self) -> list[Metric]:
        """The families read from the store, on one cursor."""
        cur = self.collector.store.cursor()
        try:
            return [*self._latest(cur), *self._faults(cur), *self._recovery(cur), *self._liveness(cur)]
        finally:
            cur.close()

    def _query(self, cur, sql: str, params: list | None = None) -> list[tuple]:
        try:
            return cur.execute(sql, params or []).fetchall()
        except Exception as exc:  # a scrape never fails as a whole because one table is odd
            self.query_errors += 1
            log.warning("metrics query failed error=%s", exc)
            return []

    def _counters(self) -> Iterator[Metric]:
        snap = {**self.collector.metrics.snapshot(), "commit_transactions": self.collector.writer.commits}
        refused = CounterMetricFamily(
            "c4_collector_batches_refused", "Batches refused for good, by reason.", labels=["reason"]
        )
        auth = CounterMetricFamily(
            "c4_collector_auth_refusals",
            "Calls refused for a missing/unknown token (unauthenticated) or a missing role (permission_denied).",
            labels=["rpc", "code"],
        )
        queries_refused = CounterMetricFamily(
            "c4_collector_queries_refused", "Query RPCs refused (not read-only) or failed.", labels=["reason"]
        )
        task_counts = {
            "task_runs": CounterMetricFamily(
                "c4_collector_task_runs", "Runs of a periodic task, failed ones included.", labels=["task"]
            ),
            "task_failures": CounterMetricFamily(
                "c4_collector_task_failures",
                "Runs of a periodic task that raised (logged; retried with backoff).",
                labels=["task"],
            ),
        }
        for name in sorted(getattr(self.collector, "tasks", {})):  # every task, 0 until it runs or fails
            snap = {f"task_runs:{name}": 0, f"task_failures:{name}": 0, **snap}
        plain: dict[str, tuple[str, str]] = dict(COUNTER_NAMES)
        values: dict[str, float] = {name: 0 for name in plain}
        for key, value in sorted(snap.items()):
            if key.startswith("auth_refused:"):
                _, rpc, code = key.split(":", 2)
                auth.add_metric([rpc, code], value)
            elif key.startswith("refused_"):
                refused.add_metric([key.removeprefix("refused_")], value)
            elif key.partition(":")[0] in task_counts:
                kind, _, task = key.partition(":")
                task_counts[kind].add_metric([task], value)
            elif key in ("queries_refused", "queries_failed"):
                queries_refused.add_metric([key.removeprefix("queries_")], value)
            elif key == "batches_refused":
                continue  # the sum of the reasons above
            else:
                plain.setdefault(key, (f"c4_collector_{key}_total", f"Collector counter {key}."))
                values[key] = value
        for key, (name, help_) in sorted(plain.items()):
            fam = CounterMetricFamily(name.removesuffix("_total"), help_)
            fam.add_metric([], values.get(key, 0))
            yield fam
        yield refused
        yield auth
        yield queries_refused
        yield from task_counts.values()
        yield from self._task_health()
        yield from self._leadership()

    def _leadership(self) -> Iterator[Metric]:
        """Whether this collector runs the diagnosis (on a lake: holds the lease), and which shard does."""
        diagnosis = getattr(self.collector, "diagnosis", None)
        if diagnosis is None:
            return
        leader = GaugeMetricFamily(
            "c4_diagnosis_leader",
            "1 when this collector runs diagnosis, alerts and remediation (on a lake: holds the lease), else 0.",
            labels=["shard", "leader"],
        )
        leader.add_metric([diagnosis.shard, diagnosis.leader], 1 if diagnosis.leading else 0)
        yield leader

    def _task_health(self) -> Iterator[Metric]:
        """Each periodic task's consecutive failures and when it last succeeded (0: never)."""
        failing = GaugeMetricFamily(
            "c4_collector_task_consecutive_failures",
            "Failed runs of a periodic task since its last success (0 = healthy).",
            labels=["task"],
        )
        success = GaugeMetricFamily(
            "c4_collector_task_last_success_timestamp_seconds",
            "Unix time a periodic task last completed (0 = not since the collector started).",
            labels=["task"],
        )
        for name, health in sorted(getattr(self.collector, "tasks", {}).items()):
            failing.add_metric([name], health.consecutive_failures)
            last = health.last_success
            success.add_metric([name], last.replace(tzinfo=UTC).timestamp() if last else 0.0)
        yield failing
        yield success

    def _latest(self, cur) -> list[Metric]:
        now = _utcnow()
        cutoff, ahead = now - timedelta(seconds=self.window_s), now + timedelta(seconds=self.max_skew_s)
        out: list[Metric] = []
        for spec in LATEST:
            rows = self._query(cur, latest_sql(spec), [cutoff, ahead] if spec.windowed else [ahead])
            labels = [label for label, _ in spec.keys]
            for i, s in enumerate(spec.series):
                cls = CounterMetricFamily if s.kind == "counter" else GaugeMetricFamily
                fam = cls(
                    s.name.removesuffix("_total") if s.kind == "counter" else s.name, s.help, labels=labels
                )
                for row in rows:
                    value = row[len(labels) + i]
                    if value is not None:
                        fam.add_metric([label_value(k) for k in row[: len(labels)]], float(value))
                out.append(fam)
        info = GaugeMetricFamily(
            "c4_node_info",
            "Node inventory from the latest Hello (value 1).",
            labels=["node", "job", "agent_id", "agent_version"],
        )
        for row in self._query(
            cur,
            "SELECT node, arg_max(job, ts), arg_max(agent_id, ts), arg_max(agent_version, ts) FROM nodes GROUP BY node",
        ):
            info.add_metric([label_value(v) for v in row], 1)
        out.append(info)
        return out

    def _faults(self, cur) -> list[Metric]:
        fam = GaugeMetricFamily(
            "c4_faults_open",
            "Open or acknowledged faults C4D found, by class and component.",
            labels=["fault_class", "component_type", "component", "detector", "state"],
        )
        for *labels, n in self._query(cur, OPEN_FAULTS_SQL):
            fam.add_metric([label_value(v) for v in labels], n)
        return [fam]

    def _recovery(self, cur) -> list[Metric]:
        """The recovery timeline's histograms, by fault class, from every stored fault (survive restarts)."""
        rows = self._query(cur, RECOVERY_SQL)
        out = []
        for name, col, help in RECOVERY_HISTOGRAMS:
            fam = HistogramMetricFamily(name, help, labels=["fault_class"])
            by_class: dict[str, list[float]] = {}
            for row in rows:
                if row[col] is not None:
                    by_class.setdefault(label_value(row[0]), []).append(float(row[col]))
            for fault_class, values in sorted(by_class.items()):
                fam.add_metric([fault_class], histogram_buckets(values, RECOVERY_BUCKETS_S), sum(values))
            out.append(fam)
        return out

    def _liveness(self, cur) -> list[Metric]:
        now = _utcnow()
        age = GaugeMetricFamily(
            "c4_agent_last_batch_age_seconds",
            "Seconds since the agent's last committed batch.",
            labels=["agent_id"],
        )
        ts = GaugeMetricFamily(
            "c4_agent_last_batch_timestamp_seconds",
            "Unix time of the agent's last committed batch.",
            labels=["agent_id"],
        )
        seq = GaugeMetricFamily(
            "c4_agent_last_committed_seq", "The agent's last committed sequence number.", labels=["agent_id"]
        )
        table = getattr(self.collector.store, "seq_table", SEQ_TABLE)
        for agent_id, updated, last_seq in self._query(cur, LIVENESS_SQL.format(table=table)):
            agent_id = label_value(agent_id)
            age.add_metric([agent_id], max(0.0, (now - updated).total_seconds()))
            ts.add_metric([agent_id], updated.replace(tzinfo=UTC).timestamp())
            seq.add_metric([agent_id], last_seq)
        return [age, ts, seq]


class _Handler(WSGIRequestHandler):
    """One scrape per connection, nothing logged per request; reads time out (``timeout``, seconds)."""

    timeout = 10.0

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        """Log nothing per request."""


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, but at most ``max_connections`` at once: more are answered 503 and
    closed, so clients holding connections open cannot take every thread of the collector."""

    daemon_threads = True
    max_connections = 16
    request_queue_size = 128  # a burst of connections is answered, not left in the SYN backlog
    on_refused = staticmethod(lambda: None)

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().server_activate()

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.on_refused()
            try:
                request.settimeout(0.0)  # never wait on a client that does not read
                request.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        """A client that timed out or went away: a debug line, not a traceback on stderr."""
        log.debug("metrics connection failed client=%s", client_address, exc_info=True)


class MetricsServer:
    """The HTTP server for ``/metrics`` in its own daemon thread, with bounded connections."""

    def __init__(self, collector: Collector, listen: str) -> None:
        self.listen = listen
        self.host, self.port = split_host_port(listen)
        self.registry = CollectorRegistry(auto_describe=False)
        cfg = collector.cfg
        self.metrics = C4Metrics(
            collector,
            cfg.metrics_window_s,
            cfg.max_clock_skew_s,
            store_cache_s=cfg.metrics_lake_cache_s if cfg.lake else 0.0,
        )
        self.registry.register(self.metrics)
        ProcessCollector(registry=self.registry)
        self.max_connections = collector.cfg.metrics_max_connections
        self.read_timeout_s = collector.cfg.metrics_read_timeout_s
        self._count = collector.metrics.inc
        self._server = None

    @property
    def url(self) -> str:
        """Where Prometheus scrapes."""
        return f"http://{self.listen}/metrics"

    def start(self) -> None:
        """Bind and serve in a daemon thread; raises OSError if the port is taken."""
        family = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM)[0][0]
        count = self._count
        server_class = type(
            "MetricsHTTPServer",
            (_BoundedServer,),
            {
                "address_family": family,
                "max_connections": self.max_connections,
                "on_refused": staticmethod(lambda: count("metrics_connections_refused")),
            },
        )
        handler = type("MetricsHandler", (_Handler,), {"timeout": self.read_timeout_s})
        self._server = make_server(
            self.host, self.port, make_wsgi_app(self.registry), server_class, handler_class=handler
        )
        threading.Thread(target=self._server.serve_forever, name="c4-metrics", daemon=True).start()
        if self.port == 0:
            self.port = self._server.server_port
            self.listen = f"{self.host}:{self.port}"
        log.info("metrics serving url=%s", self.url)

    def stop(self) -> None:
        """Stop serving, and wait for a computation from the store still running (the store closes next)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.metrics.close()
