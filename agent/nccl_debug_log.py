"""NCCL_DEBUG=INFO logs: communicator init, rings, trees and channel connections -> the topology table.

Lines are attributed to a communicator per process (host, pid): an init line names the comm pointer,
the thread (tid) that printed it and, when NCCL logs one, the commId shared by every rank. From
NCCL 2.18 the ``Init START`` line comes before the rings and connections of its thread, so those are
attributed at once. Up to 2.17 only ``Init COMPLETE`` exists and it comes last: a thread's topology
lines wait for it (``pending``); lines still waiting once the file has been quiet for ``hold_ticks``
ticks go to the process's latest communicator whose rank fits the line. From NCCL 2.22 rings, trees
and peer connections are made lazily, in a thread per comm that prints no init line
(src/group.cc ncclCollPreconnectFunc: one job, one comm) and only once per comm and connection: such a
thread goes to the latest comm of its rank that does not have the connection of its first line yet,
and keeps that comm for its later lines (so the parent and a split of the same rank, which connect the
same peers, each get their own connections; which of two comms a thread served first is not logged).
Split and shrunk communicators of 2.23+ log no commId: their comm_id is built from
the parent's (``<parent commId>/<splitCount>/<color>``), the same on every member.

What is counted as skipped (``skipped_by_reason``): a line carrying NCCL's INFO marker whose header
cannot be read (``header``), and a topology message (init, ring, trees, connection) that does not
parse (``init``, ``ring``, ``trees``, ``conn``) or raised (``error``). Every other line (other INFO
messages, WARN lines, the application's own output) is not topology and is neither parsed nor counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any

from c4.agent.nccl_log_formats import (
    COMM_TOPO,
    Conn,
    Init,
    parse_conn,
    parse_init,
    parse_ring,
    parse_trees,
    topology_kind,
)
from c4.agent.nccl_log_line import NcclLine, mentions_nccl_info, read_line
from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows, SourceUnavailable
from c4.agent.tail import DEFAULT_MAX_BYTES_PER_TICK, DirectoryTailer, FileTailer
from c4.options import Meta
from c4.options import Options as SectionOptions

log = logging.getLogger("c4.agent.nccl_debug_log")


@dataclass
class Comm:
    """One communicator as seen by one process."""

    ptr: str
    comm_id: str
    rank: int
    n_ranks: int
    cuda_dev: int
    nvml_dev: int | None
    bus_id: str
    parent_comm_id: str
    tid: int
    started: bool  # an Init START line was seen (NCCL >= 2.18)
    complete: bool = False
    conns: set[tuple[Any, ...]] = field(default_factory=set)  # connections logged for this comm


@dataclass
class Process:
    """What one process (host, pid) has logged so far."""

    comms: dict[str, Comm] = field(default_factory=dict)  # pointer -> comm, in init order
    thread_comm: dict[int, Comm] = field(default_factory=dict)  # tid -> the comm it last initialized
    conn_thread_comm: dict[int, Comm] = field(default_factory=dict)  # tid without init -> comm it connects
    new_format: bool = False  # saw an Init START line: topology lines never need to wait
    pending: dict[int, list[tuple[str, Any, NcclLine]]] = field(default_factory=dict)


def _comm_id(init: Init, proc: Process, host: str, pid: int) -> tuple[str, str]:
    """(comm_id, parent_comm_id) of an init line."""
    parent = proc.comms.get(init.parent_ptr) if init.parent_ptr else None
    parent_id = parent.comm_id if parent else (f"{host}:{pid}:{init.parent_ptr}" if init.parent_ptr else "")
    if init.comm_id:
        return init.comm_id, parent_id
    if init.parent_ptr:  # 2.23+ split/shrink: no commId; parent, split count and color name it on every rank
        return (
            f"{parent_id}/{init.split_count if init.split_count is not None else 0}/{init.color}",
            parent_id,
        )
    return init.ptr, parent_id  # before 2.16: only the pointer (unique within the process, not across ranks)


class DebugLogParser:
    """Stateful parser of one log stream (one file, possibly holding many processes)."""

    def __init__(self) -> None:
        self.procs: dict[tuple[str, int], Process] = {}
        self.skipped_by_reason: Counter[str] = Counter()

    @property
    def records_skipped(self) -> int:
        """Lines counted as unparsable, all reasons."""
        return sum(self.skipped_by_reason.values())

    def pending(self) -> int:
        """Topology lines waiting for their thread's init line."""
        return sum(len(v) for p in self.procs.values() for v in p.pending.values())

    def parse(self, line: str) -> list[dict[str, Any]]:
        """Topology rows for one log line ([] for lines that carry none, or that wait for their init)."""
        nl = read_line(line)
        if nl is None:
            if mentions_nccl_info(line):
                self.skipped_by_reason["header"] += 1
            return []
        kind = topology_kind(nl.msg)
        proc = self.procs.setdefault((nl.host, nl.pid), Process())
        if not kind:
            topo = COMM_TOPO.match(nl.msg)
            if topo and topo["ptr"].lower() in proc.comms:
                proc.thread_comm[nl.tid] = proc.comms[topo["ptr"].lower()]
            return []
        parsed: Any = {"init": parse_init, "conn": parse_conn, "ring": parse_ring, "trees": parse_trees}[
            kind
        ](nl.msg)
        if parsed is None:
            self.skipped_by_reason[kind] += 1
            return []
        if kind == "init":
            return self._init(parsed, nl, proc)
        return self._topology(kind, parsed, nl, proc)

    def flush(self) -> list[dict[str, Any]]:
        """Rows of every waiting line, attributed as well as the process's comms allow."""
        rows: list[dict[str, Any]] = []
        for proc in self.procs.values():
            waiting, proc.pending = proc.pending, {}
            for events in waiting.values():
                for kind, parsed, nl in events:
                    rows += self._rows(kind, parsed, nl, self._pick(proc, nl.tid, kind, parsed))
        return rows

    def _init(self, init: Init, nl: NcclLine, proc: Process) -> list[dict[str, Any]]:
        known = proc.comms.get(init.ptr)
        if known is not None and known.rank == init.rank and known.n_ranks == init.n_ranks:
            known.complete = known.complete or init.phase == "COMPLETE"
            proc.thread_comm[nl.tid] = known
            return self._release(proc, nl.tid, known)
        comm_id, parent_id = _comm_id(init, proc, nl.host, nl.pid)
        comm = Comm(
            init.ptr,
            comm_id,
            init.rank,
            init.n_ranks,
            init.cuda_dev,
            init.nvml_dev,
            init.bus_id,
            parent_id,
            nl.tid,
            started=init.phase == "START",
            complete=init.phase == "COMPLETE",
        )
        proc.comms.pop(init.ptr, None)  # a pointer reused after destroy is a new comm, last in order
        proc.comms[init.ptr] = comm
        proc.thread_comm[nl.tid] = comm
        proc.new_format = proc.new_format or comm.started
        row = {
            **_base(nl, comm),
            "kind": "init",
            "rank": comm.rank,
            "cuda_dev": comm.cuda_dev,
            "nvml_dev": comm.nvml_dev,
            "bus_id": comm.bus_id,
            "detail": nl.msg,
        }
        return [row, *self._release(proc, nl.tid, comm)]

    def _release(self, proc: Process, tid: int, comm: Comm) -> list[dict[str, Any]]:
        """Rows of the lines this thread logged before its init line named the comm."""
        rows: list[dict[str, Any]] = []
        for kind, parsed, nl in proc.pending.pop(tid, []):
            rows += self._rows(kind, parsed, nl, comm)
        return rows

    def _topology(self, kind: str, parsed: Any, nl: NcclLine, proc: Process) -> list[dict[str, Any]]:
        current = proc.thread_comm.get(nl.tid)
        waits = not proc.new_format and (current is None or current.complete)
        if waits:  # before 2.18: this thread's init line (Init COMPLETE) comes after its topology
            proc.pending.setdefault(nl.tid, []).append((kind, parsed, nl))
            return []
        return self._rows(kind, parsed, nl, self._pick(proc, nl.tid, kind, parsed))

    @staticmethod
    def _pick(proc: Process, tid: int, kind: str, parsed: Any) -> Comm | None:
        """The comm of a topology line: the thread's own (its init line's) if the logging rank fits;
        for a connection thread without init line, the comm it was given by its first line; else the
        latest comm of the process where the rank fits and, for a connection, that lacks it yet."""
        rank = _logger(kind, parsed)
        fits = lambda comm: comm is not None and (rank is None or comm.rank == rank)  # noqa: E731
        current = proc.thread_comm.get(tid)
        if fits(current):
            return current
        key = _conn_key(parsed) if kind == "conn" else None
        sticky = proc.conn_thread_comm.get(tid) if kind == "conn" else None
        if sticky is not None and fits(sticky) and key not in sticky.conns:
            return sticky  # (a comm that has the connection already: the tid was reused by a later job)
        candidates = [comm for comm in reversed(proc.comms.values()) if fits(comm)]
        if not candidates:
            return current
        if kind != "conn":
            return candidates[0]
        chosen = next((comm for comm in candidates if key not in comm.conns), candidates[0])
        proc.conn_thread_comm[tid] = chosen
        return chosen

    def _rows(self, kind: str, parsed: Any, nl: NcclLine, comm: Comm | None) -> list[dict[str, Any]]:
        base = _base(nl, comm)
        if kind == "conn":
            c: Conn = parsed
            if comm is not None:
                comm.conns.add(_conn_key(c))
            return [
                {
                    **base,
                    **_identity(comm, c.logger),
                    "kind": "conn",
                    "rank": c.logger,
                    "channel": c.channel,
                    "peer_rank": c.peer,
                    "direction": c.direction,
                    "transport": c.transport,
                    "net_name": c.net_name,
                    "nic_index": c.nic_index,
                    "gdr": c.gdr,
                    "detail": nl.msg,
                }
            ]
        if kind == "ring":
            channel, order, cut = parsed
            if comm is not None and comm.n_ranks:
                base["n_ranks"] = comm.n_ranks
            else:
                base["n_ranks"] = None if cut else len(order)
            # a ring line shows the whole ring only if it holds every rank: NCCL cuts it at 20 ranks
            # (<= 2.22, unmarked) or 128 bytes (2.23+, "..."); past the cut the successor is unknown
            whole = not cut and (comm is None or not comm.n_ranks or len(order) >= comm.n_ranks)
            if not whole:
                order_pairs = list(pairwise(order))
            else:
                order_pairs = [(r, order[(i + 1) % len(order)]) for i, r in enumerate(order)]
            return [
                {
                    **base,
                    **_identity(comm, r),
                    "kind": "ring",
                    "rank": r,
                    "channel": channel,
                    "peer_rank": nxt,
                    "direction": "send",
                    "detail": nl.msg,
                }
                for r, nxt in order_pairs
            ]
        return [
            {
                **base,
                **_identity(comm, me),
                "kind": "tree",
                "rank": me,
                "channel": channel,
                "peer_rank": up if up >= 0 else None,
                "direction": "",
                "detail": spec,
            }
            for channel, me, up, spec in parsed
        ]


def _logger(kind: str, parsed: Any) -> int | None:
    """The rank that printed a topology line (rings are printed by rank 0)."""
    if kind == "conn":
        return parsed.logger
    if kind == "ring":
        return 0
    trees = parsed
    return trees[0][1] if trees else None


def _conn_key(c: Conn) -> tuple[Any, ...]:
    """What NCCL connects once per comm: (logging rank, channel, connIndex, peer, direction)."""
    return (c.logger, c.channel, c.conn_index, c.peer, c.direction)


def _base(nl: NcclLine, comm: Comm | None) -> dict[str, Any]:
    """Columns every row of a line carries."""
    return {
        "hostname": nl.host,
        "pid": nl.pid,
        "tid": nl.tid,
        "cuda_dev": nl.cuda_dev,
        "comm_id": comm.comm_id if comm else "",
        "parent_comm_id": comm.parent_comm_id if comm else "",
        "n_ranks": comm.n_ranks if comm else None,
        "channel": None,
        "peer_rank": None,
        "direction": "",
        "transport": "",
        "net_name": "",
        "nic_index": None,
        "gdr": None,
        "nvml_dev": None,
        "bus_id": "",
    }


def _identity(comm: Comm | None, rank: int) -> dict[str, Any]:
    """The GPU columns, on rows of the logging process's own rank only."""
    if comm is None or comm.rank != rank:
        return {}
    return {"nvml_dev": comm.nvml_dev, "bus_id": comm.bus_id}


class DebugLogSampler:
    """Tails NCCL_DEBUG_FILE logs (a directory of them, or one file) into nccl_topology rows."""

    name = "nccl_debug_log"
    tables = ("nccl_topology",)

    class Options(SectionOptions):
        """Config keys of ``[agent.samplers.nccl_debug_log]``."""

        log_dir: Path | None = None  # where NCCL_DEBUG_FILE points (e.g. /var/log/nccl/%h.%p.log)
        log_file: Path | None = None  # one log file instead (c4 agent --test --nccl-log FILE)
        pattern: str = "*"
        max_bytes_per_tick: Annotated[int, Meta(ge=4096)] = (
            DEFAULT_MAX_BYTES_PER_TICK  # the rest comes next tick
        )
        # quiet ticks an NCCL <= 2.17 line waits for its Init COMPLETE line (default: 1 for log_dir, 0 for log_file)
        hold_ticks: Annotated[int, Meta(ge=0)] | None = None

        def __post_init__(self) -> None:
            """One source: a directory of logs or one file."""
            if self.log_dir is not None and self.log_file is not None:
                raise ValueError("[agent.samplers.nccl_debug_log] give log_dir or log_file, not both")

    def __init__(
        self,
        log_dir: Path | None,
        pattern: str = "*",
        max_bytes_per_tick: int = DEFAULT_MAX_BYTES_PER_TICK,
        log_file: Path | None = None,
        hold_ticks: int | None = None,
    ) -> None:
        self.log_dir = Path(log_dir) if log_dir else None
        self.log_file = Path(log_file) if log_file else None
        self.tailer = DirectoryTailer(self.log_dir, pattern) if self.log_dir else None
        self.file_tailer = FileTailer(self.log_file) if self.log_file else None
        self.max_bytes_per_tick = max_bytes_per_tick
        self.hold_ticks = hold_ticks if hold_ticks is not None else (0 if self.log_file else 1)
        self.parsers: dict[Path, DebugLogParser] = {}
        self.quiet_ticks: dict[Path, int] = {}
        self.errors = 0  # lines whose parsing raised

    @property
    def records_skipped(self) -> int:
        """Lines that carry NCCL's marker or claim a topology format but could not be parsed."""
        return sum(self.skipped_by_reason.values())

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        """Unparsable lines per reason: header, init, ring, trees, conn, error."""
        total: Counter[str] = Counter()
        for p in self.parsers.values():
            total.update(p.skipped_by_reason)
        if self.errors:
            total["error"] += self.errors
        return dict(total)

    @classmethod
    def from_options(cls, opts: DebugLogSampler.Options, ctx: SamplerContext) -> DebugLogSampler:
        """Build from validated options."""
        return cls(opts.log_dir, opts.pattern, opts.max_bytes_per_tick, opts.log_file, opts.hold_ticks)

    def probe(self) -> None:
        """The log directory (or file) must be configured and exist."""
        if self.log_file is not None:
            if not self.log_file.is_file():
                raise SourceUnavailable(f"NCCL debug log file {self.log_file} not found")
            return
        if self.log_dir is None or not self.log_dir.is_dir():
            raise SourceUnavailable(f"NCCL debug log dir {self.log_dir} not found (set log_dir or log_file)")

    def _read(self) -> tuple[list[tuple[Path, str]], dict[Path, bool]]:
        """New lines as (path, line), and which files are read to their end."""
        if self.file_tailer is not None:
            assert self.log_file is not None
            lines = self.file_tailer.read_lines(self.max_bytes_per_tick)
            return [(self.log_file, line) for line in lines], {self.log_file: self.file_tailer.at_eof}
        assert self.tailer is not None
        out = self.tailer.read_lines(self.max_bytes_per_tick)
        return out, {path: t.at_eof for path, t in self.tailer.tailers.items()}

    def sample(self, now_ns: int) -> Rows:
        """Topology rows from every new log line."""
        rows: list[dict[str, Any]] = []
        lines, at_eof = self._read()
        fresh = {path for path, _ in lines}
        for path, line in lines:
            try:  # one bad line is skipped alone, whatever it raises
                rows += self.parsers.setdefault(path, DebugLogParser()).parse(line)
            except Exception as exc:
                self.errors += 1
                if self.errors in (1, 10, 100, 1000) or self.errors % 10000 == 0:
                    log.warning(
                        "unparsable NCCL log line skipped file=%s error=%s: %.80s skipped_total=%d",
                        path.name,
                        type(exc).__name__,
                        exc,
                        self.records_skipped,
                    )
        for path, parser in self.parsers.items():
            quiet = 0 if path in fresh else self.quiet_ticks.get(path, 0) + 1
            self.quiet_ticks[path] = quiet
            if at_eof.get(path, True) and quiet >= self.hold_ticks and parser.pending():
                rows += parser.flush()
        return {"nccl_topology": rows}

    def close(self) -> None:
        """Close the files."""
        if self.tailer:
            self.tailer.close()
        if self.file_tailer:
            self.file_tailer.close()
