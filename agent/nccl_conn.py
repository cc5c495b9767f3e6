"""Per-connection timing records (JSON lines from the C4 NCCL profiler plugin or the twin)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from c4.agent.registry import SamplerContext
from c4.agent.sampler import Rows, SourceUnavailable
from c4.agent.tail import DEFAULT_MAX_BYTES_PER_TICK, DirectoryTailer
from c4.options import Meta
from c4.options import Options as SectionOptions

log = logging.getLogger("c4.agent.nccl_conn")

#: JSON key -> (column, type). Every key is required; see docs/connection-records.md.
FIELDS: dict[str, tuple[str, type]] = {
    "pid": ("pid", int),
    "comm": ("comm_hash", str),
    "rank": ("rank", int),
    "peer": ("peer_rank", int),
    "channel": ("channel", int),
    "dir": ("direction", str),
    "dev": ("nic_device", str),
    "port": ("nic_port", int),
    "ops": ("ops", int),
    "steps": ("steps", int),
    "bytes": ("bytes", int),
    "net_us": ("transfer_us", float),
    "wait_peer_us": ("wait_peer_us", float),
    "wait_gpu_us": ("wait_gpu_us", float),
}


class RecordError(ValueError):
    """A record line is malformed; the message names the key."""


def parse_record(line: str) -> dict[str, Any] | None:
    """One JSON line -> one nccl_connections row; None for other record kinds (raises RecordError)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError(f"not JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, nesting too deep
        raise RecordError(f"not JSON we can read: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise RecordError("not a JSON object")
    if obj.get("kind", "conn") != "conn":
        return None  # per-collective and bookkeeping lines of the plugin: not connection rows
    row: dict[str, Any] = {}
    for key, (column, kind) in FIELDS.items():
        value = obj.get(key)
        if value is None:
            raise RecordError(f"missing key {key!r}")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise RecordError(f"key {key!r} is out of range") from None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise RecordError(f"key {key!r} should be {kind.__name__}, got {type(value).__name__}")
        row[column] = value
    if row["direction"] not in ("send", "recv"):
        raise RecordError(f"key 'dir' must be 'send' or 'recv', got {row['direction']!r}")
    for key in ("ts_ns", "window_ns"):
        if not isinstance(obj.get(key), int):
            raise RecordError(f"key {key!r} should be int")
    try:
        row["ts"] = datetime.fromtimestamp(obj["ts_ns"] / 1e9, UTC).replace(tzinfo=None)
    except (OverflowError, ValueError, OSError):
        raise RecordError("key 'ts_ns' is out of range") from None
    row["window_s"] = obj["window_ns"] / 1e9
    us = row["transfer_us"]
    row["throughput_gbps"] = row["bytes"] * 8 / (us * 1e3) if us > 0 else None
    return row


class ConnRecordSampler:
    """Tails a directory of per-process JSON-lines files written by the C4 NCCL profiler plugin."""

    name = "nccl_conn"
    tables = ("nccl_connections",)

    class Options(SectionOptions):
        """Config keys of ``[agent.samplers.nccl_conn]``."""

        record_dir: Path | None = None
        pattern: str = "*.jsonl"
        start_at_end: bool = False
        max_bytes_per_tick: Annotated[int, Meta(ge=4096)] = (
            DEFAULT_MAX_BYTES_PER_TICK  # the rest comes next tick
        )

    def __init__(
        self,
        record_dir: Path | None,
        pattern: str = "*.jsonl",
        start_at_end: bool = False,
        max_bytes_per_tick: int = DEFAULT_MAX_BYTES_PER_TICK,
    ) -> None:
        self.record_dir = record_dir
        self.tailer = DirectoryTailer(record_dir, pattern, start_at_end) if record_dir else None
        self.max_bytes_per_tick = max_bytes_per_tick
        self.bad_lines = 0
        self._warned: set[str] = set()

    @property
    def records_skipped(self) -> int:
        """Record lines that were malformed and skipped."""
        return self.bad_lines

    @classmethod
    def from_options(cls, opts: ConnRecordSampler.Options, ctx: SamplerContext) -> ConnRecordSampler:
        """Build from validated options."""
        return cls(opts.record_dir, opts.pattern, opts.start_at_end, opts.max_bytes_per_tick)

    def probe(self) -> None:
        """The record directory must be configured and exist."""
        if self.record_dir is None:
            raise SourceUnavailable("no record_dir configured")
        if not self.record_dir.is_dir():
            raise SourceUnavailable(f"{self.record_dir} is not a directory")

    def sample(self, now_ns: int) -> Rows:
        """Every complete new record line, one row each; bad lines are counted and skipped."""
        rows = []
        assert self.tailer is not None
        for path, line in self.tailer.read_lines(self.max_bytes_per_tick):
            if not line.strip():
                continue
            try:
                row = parse_record(line)
            except Exception as exc:  # RecordError, or anything else one bad line raises
                self.bad_lines += 1
                reason = str(exc).split(":")[0]
                if reason not in self._warned and len(self._warned) < 100:  # one line per kind of problem
                    self._warned.add(reason)
                    log.warning(
                        "bad connection record skipped file=%s reason=%s bad_total=%d",
                        path.name,
                        exc,
                        self.bad_lines,
                    )
                continue
            if row is not None:
                rows.append(row)
        return {"nccl_connections": rows}

    def close(self) -> None:
        """Close the files."""
        if self.tailer:
            self.tailer.close()
