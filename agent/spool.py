"""On-disk spool of sequenced batches: survives restarts, bounded in bytes, drained in order.

Layout: append-only segment files ``<first_seq:020d>.seg`` holding records of
``<u32 header length><JSON header: seq, table, schema_version, size><Arrow IPC payload>``, and
``state.json`` with the end of the block of sequence numbers reserved so far (written before any
number of the block is used, so a number is never reused; a restart continues after the block,
leaving a gap the collector accepts). A segment is deleted once every batch in it is
acknowledged or dropped. Acknowledgements are not persisted: after a restart the agent learns
the collector's last committed sequence on Hello and skips what is already stored.

Writes are appends to an open file (one write per batch); they are fsynced only when asked: a
killed agent loses nothing without it (the page cache survives the process), fsync only guards
against the node itself crashing. A record torn by a crash mid-write is cut off on reopen.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("c4.agent.spool")

SUFFIX = ".seg"
SEQ_BLOCK = 1024  # sequence numbers reserved per state.json write
SEGMENT_BYTES = 8 << 20  # start a new segment past this size
_LEN = struct.Struct("<I")


@dataclass(frozen=True)
class SpooledBatch:
    """One batch as stored."""

    seq: int
    table: str
    schema_version: int
    payload: bytes


@dataclass(frozen=True)
class _Loc:
    segment: int  # first seq of the segment (its name)
    offset: int  # of the payload
    size: int
    table: str
    schema_version: int


def _write_atomic(path: Path, data: bytes, fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _random_epoch() -> int:
    """A random non-zero 63-bit spool epoch."""
    return secrets.randbits(63) | 1


class Spool:
    """Thread-safe FIFO of batches on disk with a byte bound (oldest dropped, counted)."""

    def __init__(self, directory: Path | str, max_bytes: int, fsync: bool = False) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.dropped = 0
        self.bytes = 0
        self._cond = threading.Condition()
        self._index: dict[int, _Loc] = {}
        self._live: dict[int, int] = {}  # segment -> live batches in it
        self._active: int | None = None
        self._active_fd: int | None = None
        self._active_size = 0
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink()
        for path in sorted(self.dir.glob(f"*{SUFFIX}")):
            self._recover(path)
        state, epoch = self._read_state()
        self.next_seq = max(state, max(self._index, default=0) + 1)
        self._reserved_to = self.next_seq
        self.epoch = epoch or _random_epoch()
        if not epoch:
            self._write_state(self._reserved_to)
        if self._index:
            log.info(
                "spool reopened batches=%d bytes=%d next_seq=%d", len(self._index), self.bytes, self.next_seq
            )

    # --- recovery -------------------------------------------------------------
    def _recover(self, path: Path) -> None:
        try:
            segment = int(path.stem)
        except ValueError:
            log.warning("ignoring stray file in spool path=%s", path)
            return
        data = path.read_bytes()
        pos, good = 0, 0
        while pos + _LEN.size <= len(data):
            (hlen,) = _LEN.unpack_from(data, pos)
            hstart = pos + _LEN.size
            if hstart + hlen > len(data):
                break
            try:
                h = json.loads(data[hstart : hstart + hlen])
                seq, size = int(h["seq"]), int(h["size"])
            except (ValueError, KeyError, TypeError):
                break
            if hstart + hlen + size > len(data):
                break
            self._index[seq] = _Loc(segment, hstart + hlen, size, h["table"], int(h["schema_version"]))
            self._live[segment] = self._live.get(segment, 0) + 1
            self.bytes += size
            pos = good = hstart + hlen + size
        if good < len(data):
            log.warning("spool segment had a torn record, cut off path=%s kept_bytes=%d", path, good)
            with open(path, "r+b") as f:
                f.truncate(good)
        if not self._live.get(segment):
            path.unlink()

    def _read_state(self) -> tuple[int, int]:
        """(next_seq, epoch) from state.json; epoch 0 when there is none yet."""
        try:
            state = json.loads((self.dir / "state.json").read_text())
            return int(state["next_seq"]), int(state.get("epoch", 0))
        except FileNotFoundError:
            return 1, 0
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("spool state unreadable, recovering from segments error=%s", exc)
            return 1, 0

    def _write_state(self, next_seq: int) -> None:
        state = {"next_seq": next_seq, "epoch": self.epoch}
        _write_atomic(self.dir / "state.json", json.dumps(state).encode(), self.fsync)

    def new_epoch(self) -> int:
        """Start a new spool epoch (the collector then starts this agent's sequence over); returns it."""
        with self._cond:
            self.epoch = _random_epoch()
            self._write_state(self._reserved_to)
            log.warning("spool epoch started epoch=%d next_seq=%d", self.epoch, self.next_seq)
            return self.epoch

    def _path(self, segment: int) -> Path:
        return self.dir / f"{segment:020d}{SUFFIX}"

    # --- writing --------------------------------------------------------------
    def append(self, table: str, schema_version: int, payload: bytes) -> int:
        """Store a batch; returns its sequence number. Drops the oldest batches if over the bound."""
        with self._cond:
            seq = self.next_seq
            self.next_seq += 1
            if seq >= self._reserved_to:  # reserve the next block before using any of it
                self._reserved_to = seq + SEQ_BLOCK
                self._write_state(self._reserved_to)
            if self._active_fd is None or self._active_size >= SEGMENT_BYTES:
                self._roll(seq)
            header = json.dumps(
                {"seq": seq, "table": table, "schema_version": schema_version, "size": len(payload)}
            ).encode()
            record = _LEN.pack(len(header)) + header + payload
            assert self._active is not None and self._active_fd is not None
            os.write(self._active_fd, record)
            if self.fsync:
                os.fsync(self._active_fd)
            offset = self._active_size + _LEN.size + len(header)
            self._active_size += len(record)
            self._index[seq] = _Loc(self._active, offset, len(payload), table, schema_version)
            self._live[self._active] = self._live.get(self._active, 0) + 1
            self.bytes += len(payload)
            while self.bytes > self.max_bytes and len(self._index) > 1:
                oldest = min(self._index)
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

    def _roll(self, first_seq: int) -> None:
        old = self._active
        if self._active_fd is not None:
            os.close(self._active_fd)
        self._active = first_seq
        self._active_fd = os.open(self._path(first_seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._active_size = 0
        if old is not None and not self._live.get(old):
            self._delete_segment(old)

    def _delete_segment(self, segment: int) -> None:
        self._live.pop(segment, None)
        try:
            self._path(segment).unlink()
        except FileNotFoundError:
            pass

    def _remove(self, seq: int) -> None:
        loc = self._index.pop(seq, None)
        if loc is None:
            return
        self.bytes -= loc.size
        self._live[loc.segment] -= 1
        if self._live[loc.segment] == 0 and loc.segment != self._active:
            self._delete_segment(loc.segment)

    # --- reading and acknowledging -----------------------------------------------
    def pending(self, after: int = 0) -> list[int]:
        """Sequence numbers still spooled, above ``after``, in order."""
        with self._cond:
            return sorted(s for s in self._index if s > after)

    def read(self, seq: int) -> SpooledBatch | None:
        """Load one batch (None if it was dropped or acknowledged meanwhile)."""
        with self._cond:
            loc = self._index.get(seq)
        if loc is None:
            return None
        try:
            with open(self._path(loc.segment), "rb") as f:
                f.seek(loc.offset)
                payload = f.read(loc.size)
        except FileNotFoundError:
            return None
        return SpooledBatch(seq, loc.table, loc.schema_version, payload)

    def ack(self, seq: int) -> None:
        """The collector committed (or refused) this batch: forget it."""
        with self._cond:
            self._remove(seq)
            self._cond.notify_all()

    def ack_through(self, seq: int) -> int:
        """Forget every batch up to and including ``seq``; returns how many."""
        with self._cond:
            done = [s for s in self._index if s <= seq]
            for s in done:
                self._remove(s)
            if seq >= self.next_seq:
                self.next_seq = seq + 1
                self._reserved_to = self.next_seq + SEQ_BLOCK
                self._write_state(self._reserved_to)
            self._cond.notify_all()
            return len(done)

    def wait_for_more(self, after: int, timeout_s: float) -> bool:
        """Block until a batch above ``after`` exists (True) or the timeout passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: any(s > after for s in self._index), timeout_s)

    def close(self) -> None:
        """Close the active segment (deleting it when nothing in it is still waiting)."""
        with self._cond:
            if self._active_fd is not None:
                os.close(self._active_fd)
                self._active_fd = None
            if self._active is not None and not self._live.get(self._active):
                self._delete_segment(self._active)
            self._active = None

    def __len__(self) -> int:
        with self._cond:
            return len(self._index)
