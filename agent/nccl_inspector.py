"""NCCL Inspector output: one row per rank per completed collective or p2p, from a tailed directory or file.

Format (ext-profiler/inspector, plugins/profiler/inspector from 2.29.7; NCCL 2.28.3 .. 2.30.x all write
``inspector_output_format_version`` "v4.0"): one JSON object per line in
``<NCCL_INSPECTOR_DUMP_DIR>/<hostname>-pid<pid>.log``, with ``header`` (``id``, ``rank``, ``n_ranks``,
``nnodes``; ``comm_name`` since 2.30), ``metadata`` (``dump_timestamp_us``, ``hostname``, ``pid``, ...)
and ``coll_perf`` (``coll``, ``coll_sn``, ``coll_msg_size_bytes``, ``coll_exec_time_us``,
``coll_timing_source``, ``coll_algobw_gbs``, ``coll_busbw_gbs``) or, since 2.30, ``p2p_perf`` (the same
with ``p2p_`` and ``p2p_peer``). The start of a collective (``event_trace_ts.coll_start_ts``) is written
only with NCCL_INSPECTOR_DUMP_VERBOSE=1; by default ``start_ts`` stays NULL. NCCL writes a NaN double
as the string ``"nan"``; it is read as NULL. Prometheus textfiles (NCCL_INSPECTOR_PROM_DUMP=1) are not
this format: their lines are counted as skipped (reason ``prometheus_textfile``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows, SourceUnavailable
from c4.agent.tail import DEFAULT_MAX_BYTES_PER_TICK, DirectoryTailer
from c4.options import Meta
from c4.options import Options as SectionOptions

log = logging.getLogger("c4.agent.nccl_inspector")
MAX_OBJECT_BYTES = 1 << 20
#: A line of NCCL_INSPECTOR_PROM_DUMP=1 output: ``# HELP``/``# TYPE`` or ``nccl_<metric>{labels} value``.
_PROM_LINE = re.compile(r"^(# (HELP|TYPE) nccl_|nccl_\w+\{)")


def _ts(us: Any) -> datetime | None:
    if not isinstance(us, (int, float)) or isinstance(us, bool) or us <= 0:
        return None
    try:
        return datetime.fromtimestamp(us / 1e6, UTC).replace(tzinfo=None)
    except (OverflowError, ValueError, OSError):  # past year 9999 (or inf): not a time
        return None


def _num(v: Any, kind: type) -> Any:
    """``v`` as ``kind``, or None when it is missing or cannot be one (a 400-digit float overflows)."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        out = kind(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return None if isinstance(out, float) and not math.isfinite(out) else out


def inspector_row(obj: dict) -> dict[str, Any] | None:
    """One Inspector object -> an nccl_collectives row (None if it has no coll_perf/p2p_perf)."""
    header = obj.get("header") or {}
    meta = obj.get("metadata") or {}
    perf, prefix, kind = obj.get("coll_perf"), "coll", "coll"
    if not isinstance(perf, dict):
        perf, prefix, kind = obj.get("p2p_perf"), "p2p", "p2p"
    if not isinstance(perf, dict) or not isinstance(header, dict):
        return None
    trace = perf.get("event_trace_ts") or {}
    start_us = trace.get(f"{prefix}_start_ts") if isinstance(trace, dict) else None
    row = {
        "comm_id": str(header.get("id", "")),
        "comm_name": str(header.get("comm_name", "") or ""),
        "rank": _num(header.get("rank"), int),
        "n_ranks": _num(header.get("n_ranks"), int),
        "nnodes": _num(header.get("nnodes"), int),
        "kind": kind,
        "coll": str(perf.get(prefix) or perf.get("coll") or perf.get("p2p") or ""),
        "coll_sn": _num(perf.get(f"{prefix}_sn"), int),
        "peer": _num(perf.get("peer", perf.get("p2p_peer")), int),
        "msg_size_bytes": _num(perf.get(f"{prefix}_msg_size_bytes"), int),
        "exec_time_us": _num(perf.get(f"{prefix}_exec_time_us"), float),
        "timing_source": str(perf.get(f"{prefix}_timing_source", "") or ""),
        "algobw_gbs": _num(perf.get(f"{prefix}_algobw_gbs"), float),
        "busbw_gbs": _num(perf.get(f"{prefix}_busbw_gbs"), float),
        "start_ts": _ts(start_us),
        "hostname": str(meta.get("hostname", "") or ""),
        "pid": _num(meta.get("pid"), int),
        "format_version": str(meta.get("inspector_output_format_version", "") or ""),
    }
    if row["rank"] is None or row["coll_sn"] is None:
        return None
    ts = _ts(meta.get("dump_timestamp_us"))
    if ts is not None:
        row["ts"] = ts
    return row


class ObjectAssembler:
    """Reassembles JSON objects from lines: one per line (JSON lines) or pretty-printed over several."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.depth = 0
        self.size = 0

    def feed(self, line: str) -> tuple[dict | None, str]:
        """(object, garbage): an object when one completes; garbage names why text is not an object ("" if it is).

        A line starting with ``{`` and holding more is one JSON line and must parse by itself; a bare
        ``{`` starts a pretty-printed object that ends when its braces balance. A new object at column 0
        abandons an unfinished one (a writer that died mid-object) as garbage.
        """
        stripped = line.strip()
        garbage = ""
        if self.buf and line.startswith("{"):
            self.buf, self.depth, self.size = [], 0, 0
            garbage = "torn_object"
        if not self.buf:
            if not stripped:
                return None, garbage
            if not stripped.startswith("{"):
                return None, "prometheus_textfile" if _PROM_LINE.match(stripped) else "not_json"
            if stripped != "{":
                try:
                    obj = json.loads(stripped)
                except (ValueError, RecursionError):  # not JSON, a 5000-digit number, nesting too deep
                    return None, "not_json"
                return (obj, garbage) if isinstance(obj, dict) else (None, "not_json")
        self.buf.append(line)
        self.size += len(line)
        self.depth += line.count("{") - line.count("}")
        if self.depth > 0 and self.size < MAX_OBJECT_BYTES:
            return None, garbage
        text = "\n".join(self.buf)
        self.buf, self.depth, self.size = [], 0, 0
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            return None, "not_json"
        return (obj, garbage) if isinstance(obj, dict) else (None, "not_json")


class InspectorSampler:
    """Tails NCCL_INSPECTOR_DUMP_DIR (or one dump file); garbage and partial lines are counted and skipped.

    The directory (or file) may appear after the agent started, with the job: until then a tick reads
    nothing, and once it is there everything in it is read from its start."""

    name = "nccl_inspector"
    tables = ("nccl_collectives",)

    class Options(SectionOptions):
        """Config keys of ``[agent.samplers.nccl_inspector]``."""

        dump_dir: Path | None = None  # NCCL_INSPECTOR_DUMP_DIR of the jobs on this node, or one dump file
        pattern: str = "**/*"
        start_at_end: bool = False
        max_bytes_per_tick: Annotated[int, Meta(ge=4096)] = (
            DEFAULT_MAX_BYTES_PER_TICK  # the rest comes next tick
        )

    def __init__(
        self,
        dump_dir: Path | None,
        pattern: str = "**/*",
        start_at_end: bool = False,
        max_bytes_per_tick: int = DEFAULT_MAX_BYTES_PER_TICK,
    ) -> None:
        self.dump_dir = Path(dump_dir) if dump_dir else None
        self.pattern = pattern
        self.start_at_end = start_at_end
        self.tailer: DirectoryTailer | None = None
        self.max_bytes_per_tick = max_bytes_per_tick
        self.assemblers: dict[Path, ObjectAssembler] = {}
        self.skipped_by_reason: Counter = Counter()
        self._waiting_logged = False

    @property
    def records_skipped(self) -> int:
        """Lines and objects that were not Inspector records (garbage, torn, unparsable)."""
        return sum(self.skipped_by_reason.values())

    @classmethod
    def from_options(cls, opts: InspectorSampler.Options, ctx: SamplerContext) -> InspectorSampler:
        """Build from validated options."""
        return cls(opts.dump_dir, opts.pattern, opts.start_at_end, opts.max_bytes_per_tick)

    def probe(self) -> None:
        """A dump directory must be configured; it may not exist yet (the job creates it)."""
        if self.dump_dir is None:
            raise SourceUnavailable("no Inspector dump_dir configured (NCCL_INSPECTOR_DUMP_DIR of the jobs)")
        self._open_tailer(at_start=True)

    def _open_tailer(self, at_start: bool) -> DirectoryTailer | None:
        """The tailer, once the directory or file exists (``start_at_end`` holds only for what was there at start)."""
        if self.tailer is None and self.dump_dir is not None:
            if self.dump_dir.is_file():
                d, pattern = self.dump_dir.parent, self.dump_dir.name
            elif self.dump_dir.is_dir():
                d, pattern = self.dump_dir, self.pattern
            else:
                if not self._waiting_logged:
                    log.info("Inspector dump dir not there yet, waiting for it path=%s", self.dump_dir)
                    self._waiting_logged = True
                return None
            self.tailer = DirectoryTailer(d, pattern, self.start_at_end and at_start)
            if self._waiting_logged:
                log.info("Inspector dump dir appeared path=%s", self.dump_dir)
        return self.tailer

    def sample(self, now_ns: int) -> Rows:
        """Rows for every object completed since the last tick."""
        tailer = self._open_tailer(at_start=False)
        if tailer is None:
            return {}
        rows = []
        for path, line in tailer.read_lines(self.max_bytes_per_tick):
            try:  # one bad record is skipped alone, whatever it raises
                obj, garbage = self.assemblers.setdefault(path, ObjectAssembler()).feed(line)
                row = None if obj is None else inspector_row(obj)
            except Exception as exc:
                obj, garbage, row = None, "record_error", None
                log.debug("Inspector record failed file=%s error=%s", path.name, exc)
            if garbage:
                self._skipped(path, garbage)
            if obj is not None:
                if row is None:
                    self._skipped(path, "not_an_inspector_record")
                else:
                    rows.append(row)
        return {"nccl_collectives": rows}

    def _skipped(self, path: Path, reason: str) -> None:
        self.skipped_by_reason[reason] += 1
        n = self.records_skipped
        if n in (1, 10, 100, 1000) or n % 10000 == 0:
            log.warning("non-Inspector line skipped file=%s reason=%s skipped_total=%d", path.name, reason, n)

    def close(self) -> None:
        """Close the files."""
        if self.tailer:
            self.tailer.close()
