"""Training-step traces (docs/step-trace.md): one step_ops row per op per rank, from a directory a job writes.

JSON lines files (``*.jsonl``) are tailed like logs: whole lines only, across rotation and truncation.
Parquet files (``*.parquet``) are read once, when complete: their size and mtime unchanged since the
previous tick, or older than ``settle_s``. A record that breaks the format's rules (a missing required
column, a wrong type, an unknown op, a negative duration) is counted per reason and skipped alone.
Rules that need other records (a recv without its send) are the collector's: the attribution checks them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq

from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows, SourceUnavailable
from c4.agent.tail import DEFAULT_MAX_BYTES_PER_TICK, DirectoryTailer
from c4.options import Meta
from c4.options import Options as SectionOptions
from c4.step_trace import OPS
from c4.wire_limits import MAX_TS_US

log = logging.getLogger("c4.agent.step_trace")

# Column rules: the same as analytics.step_trace.validate_trace's (tests/analytics/test_step_jobs.py checks they
# agree); the agent may import only c4/, where the writer's OPS live.
#: Required column -> type.
REQUIRED: dict[str, type] = {
    "job": str,
    "rank": int,
    "dp_rank": int,
    "pp_stage": int,
    "tp_rank": int,
    "step": int,
    "op": str,
    "start_s": float,
    "duration_s": float,
}
#: Optional column -> type (missing or null: NULL).
OPTIONAL: dict[str, type] = {"microbatch": int, "host": str, "local_rank": int, "comm": str, "ep_rank": int}

#: Largest value of each integer column (INTEGER is 32-bit, step is BIGINT).
_INT_MAX = {"step": (1 << 63) - 1}
_INT32_MAX = (1 << 31) - 1
#: Latest op start the store holds (2262-04-11, what int64 nanoseconds hold): a later one would make the
#: collector refuse the whole batch, so it is counted here as out_of_range.
_MAX_START_S = MAX_TS_US / 1e6
#: Rows one tick reads from Parquet files at most unless configured; the rest comes next tick.
DEFAULT_MAX_ROWS_PER_TICK = 200_000


class TraceRecordError(ValueError):
    """One trace record breaks the format; ``reason`` is the short name it is counted under."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _value(obj: dict, column: str, kind: type, required: bool) -> Any:
    """The column's value checked against its type (None for a missing optional one)."""
    value = obj.get(column)
    if value is None or (kind is not float and isinstance(value, float) and math.isnan(value)):
        if required:
            raise TraceRecordError("missing_column", f"missing required column {column!r}")
        return None
    if isinstance(value, bool) or not (isinstance(value, kind) or (kind is float and isinstance(value, int))):
        raise TraceRecordError(
            "wrong_type", f"column {column!r} should be {kind.__name__}, got {value!r:.40}"
        )
    if kind is int and not -_INT_MAX.get(column, _INT32_MAX) - 1 <= value <= _INT_MAX.get(column, _INT32_MAX):
        raise TraceRecordError("out_of_range", f"column {column!r} is out of range: {value}")
    if kind is float:
        try:
            value = float(value)
        except OverflowError:
            raise TraceRecordError("out_of_range", f"column {column!r} is out of range") from None
        if not math.isfinite(value):
            raise TraceRecordError("wrong_type", f"column {column!r} is not a finite number: {value}")
    return value


def trace_row(obj: Any) -> dict[str, Any]:
    """One trace record (a JSON object or a Parquet row as a dict) -> a step_ops row; raises TraceRecordError."""
    if not isinstance(obj, dict):
        raise TraceRecordError("not_an_object", f"a record is a JSON object, not a {type(obj).__name__}")
    row = {c: _value(obj, c, k, True) for c, k in REQUIRED.items()}
    row.update({c: _value(obj, c, k, False) for c, k in OPTIONAL.items()})
    if row["op"] not in OPS:
        raise TraceRecordError("unknown_op", f"unknown op {row['op']!r:.40}; known: {', '.join(OPS)}")
    for column in ("rank", "dp_rank", "pp_stage", "tp_rank"):
        if row[column] < 0:
            raise TraceRecordError("negative_rank", f"column {column!r} is negative: {row[column]}")
    if row["duration_s"] < 0:
        raise TraceRecordError("negative_duration", f"duration_s is negative: {row['duration_s']}")
    if not 0 < row["start_s"] <= _MAX_START_S:
        raise TraceRecordError("out_of_range", f"start_s is not a Unix time in seconds: {row['start_s']}")
    row["ts"] = datetime.fromtimestamp(row["start_s"], UTC).replace(tzinfo=None)
    row["host"] = row["host"] or ""
    row["comm"] = row["comm"] or ""
    return row


def line_row(line: str) -> dict[str, Any] | None:
    """One JSON line -> a step_ops row; None for a blank line; raises TraceRecordError."""
    text = line.strip()
    if not text:
        return None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, a 5000-digit number, nesting too deep
        raise TraceRecordError("not_json", "the line is not JSON") from None
    return trace_row(obj)


@dataclass
class ParquetFile:
    """One Parquet file of the directory: which file (inode, size, mtime) was read, and the rows still to read."""

    signature: tuple[int, int, int]
    rows: Iterator[dict] | None = None  # the rows still to read, while it is being read
    failed: bool = False  # it could not be read: tried again when it changes
    done: bool = False


class StepTraceSampler:
    """Reads the step-trace files of a directory (JSON lines tailed, Parquet once complete); never crashes on them.

    The directory may appear after the agent started (the job creates it): until then a tick reads nothing."""

    name = "step_trace"
    tables = ("step_ops",)

    class Options(SectionOptions):
        """Config keys of ``[agent.samplers.step_trace]``."""

        trace_dir: Path | None = None  # where the jobs of this node write their step traces; unset: off
        start_at_end: bool = False  # skip what JSON lines files held when the agent started
        settle_s: Annotated[float, Meta(ge=0)] = 10.0  # a Parquet file this long unchanged is complete
        max_bytes_per_tick: Annotated[int, Meta(ge=4096)] = DEFAULT_MAX_BYTES_PER_TICK
        max_rows_per_tick: Annotated[int, Meta(ge=1)] = DEFAULT_MAX_ROWS_PER_TICK  # Parquet rows per tick

    def __init__(
        self,
        trace_dir: Path | None,
        start_at_end: bool = False,
        settle_s: float = 10.0,
        max_bytes_per_tick: int = DEFAULT_MAX_BYTES_PER_TICK,
        max_rows_per_tick: int = DEFAULT_MAX_ROWS_PER_TICK,
    ) -> None:
        self.trace_dir = Path(trace_dir) if trace_dir else None
        self.start_at_end = start_at_end
        self.settle_s = settle_s
        self.max_bytes_per_tick = max_bytes_per_tick
        self.max_rows_per_tick = max_rows_per_tick
        self.tailer: DirectoryTailer | None = None
        self.parquet: dict[tuple[Path, int], ParquetFile] = {}  # (path, inode) -> state
        self.skipped_by_reason: Counter = Counter()
        self._oversized: dict[Path, int] = {}  # lines the tailer dropped as too long, per file
        self._waiting_logged = False

    @property
    def records_skipped(self) -> int:
        """Records (lines, Parquet rows) that broke the format and were skipped."""
        return sum(self.skipped_by_reason.values())

    @classmethod
    def from_options(cls, opts: StepTraceSampler.Options, ctx: SamplerContext) -> StepTraceSampler:
        """Build from validated options."""
        return cls(
            opts.trace_dir, opts.start_at_end, opts.settle_s, opts.max_bytes_per_tick, opts.max_rows_per_tick
        )

    def probe(self) -> None:
        """A trace directory must be configured; it may not exist yet."""
        if self.trace_dir is None:
            raise SourceUnavailable("no step-trace trace_dir configured (the jobs' step-trace directory)")
        self._open_tailer(at_start=True)

    def _open_tailer(self, at_start: bool) -> DirectoryTailer | None:
        if self.tailer is None and self.trace_dir is not None:
            if not self.trace_dir.is_dir():
                if not self._waiting_logged:
                    log.info("step-trace dir not there yet, waiting for it path=%s", self.trace_dir)
                    self._waiting_logged = True
                return None
            self.tailer = DirectoryTailer(self.trace_dir, "**/*.jsonl", self.start_at_end and at_start)
            if self._waiting_logged:
                log.info("step-trace dir appeared path=%s", self.trace_dir)
        return self.tailer

    def sample(self, now_ns: int) -> Rows:
        """Rows of every record completed since the last tick."""
        tailer = self._open_tailer(at_start=False)
        if tailer is None:
            return {}
        rows: list[dict[str, Any]] = []
        for path, line in tailer.read_lines(self.max_bytes_per_tick):
            try:  # one bad record is skipped alone, whatever it raises
                row = line_row(line)
            except TraceRecordError as exc:
                self._skipped(path, exc.reason, exc)
                continue
            except Exception as exc:
                self._skipped(path, "record_error", exc)
                continue
            if row is not None:
                rows.append(row)
        self._count_oversized(tailer)
        rows += self._parquet_rows()
        return {"step_ops": rows}

    def _count_oversized(self, tailer: DirectoryTailer) -> None:
        """Lines the tailer dropped for being longer than its limit count as records skipped."""
        for path, t in tailer.tailers.items():
            new = t.stats.oversized_lines - self._oversized.get(path, 0)
            if new > 0:
                self._oversized[path] = t.stats.oversized_lines
                for _ in range(new):
                    self._skipped(path, "line_too_long", None)

    def _parquet_rows(self) -> list[dict[str, Any]]:
        """Rows of complete Parquet files, at most max_rows_per_tick (a file being read continues next tick).

        A file is complete once unchanged for ``settle_s``. A file replaced under its name (a new inode) is
        read anew; one rewritten in place after it was read is not (its rows are in already) and is logged.
        """
        assert self.trace_dir is not None
        out: list[dict[str, Any]] = []
        now_s = time.time()
        seen = set()
        for path in sorted(self.trace_dir.glob("**/*.parquet")):
            try:
                st = os.stat(path)
            except OSError:
                continue  # gone between glob and stat
            if not stat.S_ISREG(st.st_mode):
                continue
            seen.add(path)
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
            f = self.parquet.get(path)
            if f is not None and f.signature != sig and f.rows is None:
                if f.failed or f.signature[0] != st.st_ino:
                    f = None  # unreadable before, or a new file under the name: read it (again)
                elif f.done:
                    log.warning(
                        "Parquet step trace rewritten in place after it was read, not re-read file=%s", path
                    )
                    f.signature = sig
            if f is None:
                if now_s - st.st_mtime_ns / 1e9 < self.settle_s:
                    continue  # it may still be being written
                f = self.parquet[path] = ParquetFile(sig, self._parquet_records(path))
            if f.rows is not None:
                out += self._take(path, f, self.max_rows_per_tick - len(out))
            if len(out) >= self.max_rows_per_tick:
                break
        for path in set(self.parquet) - seen:
            del self.parquet[path]  # deleted (what was not read of it yet is lost)
        return out

    def _parquet_records(self, path: Path) -> Iterator[dict]:
        """The file's rows as dicts, batch by batch; an unreadable file counts once and yields nothing."""
        try:
            pf = pq.ParquetFile(path)
            for batch in pf.iter_batches(batch_size=8192):
                yield from batch.to_pylist()
        except Exception as exc:  # not Parquet, truncated, a footer pyarrow refuses
            self.parquet[path].failed = True
            self._skipped(path, "unreadable_parquet", exc)

    def _take(self, path: Path, f: ParquetFile, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` rows of the file; marks it done when its rows run out."""
        out: list[dict[str, Any]] = []
        assert f.rows is not None
        if n <= 0:
            return out
        for obj in f.rows:
            try:
                out.append(trace_row(obj))
            except TraceRecordError as exc:
                self._skipped(path, exc.reason, exc)
            except Exception as exc:
                self._skipped(path, "record_error", exc)
            if len(out) >= n:
                return out
        f.rows, f.done = None, True
        return out

    def _skipped(self, path: Path, reason: str, exc: Exception | None) -> None:
        self.skipped_by_reason[reason] += 1
        n = self.records_skipped
        if n in (1, 10, 100, 1000) or n % 10000 == 0:
            log.warning(
                "step-trace record skipped file=%s reason=%s error=%s skipped_total=%d",
                path.name,
                reason,
                exc,
                n,
            )

    def close(self) -> None:
        """Close the files."""
        if self.tailer:
            self.tailer.close()
        for f in self.parquet.values():
            f.rows = None
