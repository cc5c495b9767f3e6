"""On-disk spool of sequenced batches: survives restarts, bounded in bytes, drained in order.

Layout: ``<dir>/state.json`` holds the next sequence number (written before any batch
using it, so a number is never reused); each batch is ``<seq:020d>.batch`` = one JSON
header line (table, schema_version) followed by the Arrow IPC payload.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("c4.agent.spool")

SUFFIX = ".batch"


@dataclass(frozen=True)
class SpooledBatch:
    """One batch as stored."""

    seq: int
    table: str
    schema_version: int
    payload: bytes


def _write_atomic(path: Path, data: bytes, fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


class Spool:
    """Thread-safe FIFO of batches on disk with a byte bound (oldest dropped, counted)."""

    def __init__(self, directory: Path | str, max_bytes: int, fsync: bool = True) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.dropped = 0
        self._cond = threading.Condition()
        self._sizes: dict[int, int] = {}
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink()  # a write torn by a crash never became a batch
        for p in self.dir.glob(f"*{SUFFIX}"):
            try:
                self._sizes[int(p.stem)] = p.stat().st_size
            except ValueError:
                log.warning("ignoring stray file in spool path=%s", p)
        state = self._read_state()
        self.next_seq = max(state, max(self._sizes, default=0) + 1)
        self.bytes = sum(self._sizes.values())
        if self._sizes:
            log.info(
                "spool reopened batches=%d bytes=%d next_seq=%d", len(self._sizes), self.bytes, self.next_seq
            )

    def _read_state(self) -> int:
        try:
            return int(json.loads((self.dir / "state.json").read_text())["next_seq"])
        except FileNotFoundError:
            return 1
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("spool state unreadable, recovering from batch files error=%s", exc)
            return 1

    def _write_state(self) -> None:
        _write_atomic(self.dir / "state.json", json.dumps({"next_seq": self.next_seq}).encode(), self.fsync)

    def append(self, table: str, schema_version: int, payload: bytes) -> int:
        """Store a batch; returns its sequence number. Drops the oldest batches if over the bound."""
        header = json.dumps({"table": table, "schema_version": schema_version}).encode() + b"\n"
        with self._cond:
            seq = self.next_seq
            self.next_seq += 1
            self._write_state()
            _write_atomic(self._path(seq), header + payload, self.fsync)
            size = len(header) + len(payload)
            self._sizes[seq] = size
            self.bytes += size
            while self.bytes > self.max_bytes and len(self._sizes) > 1:
                oldest = min(self._sizes)
                self._remove(oldest)
                self.dropped += 1
                log.warning(
                    "spool full, dropped oldest batch seq=%d max_bytes=%d dropped_total=%d",
                    oldest,
                    self.max_bytes,
                    self.dropped,
                )
            self._cond.notify_all()
        return seq

    def _path(self, seq: int) -> Path:
        return self.dir / f"{seq:020d}{SUFFIX}"

    def _remove(self, seq: int) -> None:
        size = self._sizes.pop(seq, None)
        if size is None:
            return
        self.bytes -= size
        try:
            self._path(seq).unlink()
        except FileNotFoundError:
            pass

    def pending(self, after: int = 0) -> list[int]:
        """Sequence numbers still spooled, above ``after``, in order."""
        with self._cond:
            return sorted(s for s in self._sizes if s > after)

    def read(self, seq: int) -> SpooledBatch | None:
        """Load one batch (None if it was dropped or acknowledged meanwhile)."""
        try:
            raw = self._path(seq).read_bytes()
        except FileNotFoundError:
            return None
        header, _, payload = raw.partition(b"\n")
        meta = json.loads(header)
        return SpooledBatch(seq, meta["table"], int(meta["schema_version"]), payload)

    def ack(self, seq: int) -> None:
        """The collector committed (or refused) this batch: delete it."""
        with self._cond:
            self._remove(seq)
            self._cond.notify_all()

    def ack_through(self, seq: int) -> int:
        """Delete every batch up to and including ``seq``; returns how many."""
        with self._cond:
            done = [s for s in self._sizes if s <= seq]
            for s in done:
                self._remove(s)
            if seq >= self.next_seq:
                self.next_seq = seq + 1
                self._write_state()
            self._cond.notify_all()
            return len(done)

    def wait_for_more(self, after: int, timeout_s: float) -> bool:
        """Block until a batch above ``after`` exists (True) or the timeout passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: any(s > after for s in self._sizes), timeout_s)

    def __len__(self) -> int:
        with self._cond:
            return len(self._sizes)
