"""On-disk spool of sequenced batches: survives restarts, bounded in bytes, drained in order.

Layout: append-only segment files ``<first_seq:020d>.seg`` of records
``<magic "C4R2"><u32 header length><u32 CRC-32 of header + payload><JSON header: seq, table,
schema_version, size><Arrow IPC payload>``, and ``state.json`` holding the spool's ``epoch`` (a
random non-zero 63-bit number drawn when the spool is created) and ``next_seq``, the end of the
block of sequence numbers reserved so far (written before any number of the block is used, so a
number is never reused; a restart continues after the block, leaving a gap the collector accepts).
A segment is deleted once every batch in it is acknowledged or dropped. Acknowledgements are not
persisted: after a restart the agent learns the collector's last committed sequence on Hello and
skips what is already stored.

Writes are appends to an open file (one record per batch), all or nothing: a short or failed write
(a full disk) is cut back off the segment and raised as ``SpoolWriteError``, using no sequence
number. They are fsynced only when asked: a killed agent loses nothing without it (the page cache
survives the process), fsync only guards against the node itself crashing. On reopen a record torn
by a crash is cut off, and a record whose checksum does not match is skipped and counted
(``damaged``) while the records after it are kept; ``read()`` checks the checksum too.

Segments of the previous format (``<u32 header length><JSON header><payload>``, no magic and no
checksum) are still read, so an upgrade loses nothing; new records are always written in the new
format, into new segments.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("c4.agent.spool")

SUFFIX = ".seg"
SEQ_BLOCK = 1024  # sequence numbers reserved per state.json write
SEGMENT_BYTES = 8 << 20  # start a new segment past this size
MAGIC = b"C4R2"
_HEAD = struct.Struct("<4sII")  # magic, header length, CRC-32 of header + payload
_LEGACY_LEN = struct.Struct("<I")  # the previous format: header length only
MAX_HEADER_BYTES = 1 << 16


class SpoolError(RuntimeError):
    """The spool directory cannot be used; the message names the path and the problem."""


class SpoolWriteError(OSError):
    """A batch could not be written (disk full, I/O error); nothing of it was kept."""


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
    header_bytes: int = 0  # JSON header length, right before the payload
    crc: int | None = None  # of header + payload; None for records of the previous format


def new_epoch() -> int:
    """A random non-zero 63-bit spool epoch."""
    while True:
        epoch = secrets.randbits(63)
        if epoch:
            return epoch


def _write_atomic(path: Path, data: bytes, fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _usable_dir(directory: Path) -> None:
    """Create the spool directory or raise SpoolError naming the path and what is wrong with it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            kind = "a regular file" if blocker.is_file() else "a special file"
            raise SpoolError(
                f"spool dir {directory}: {blocker} is {kind}, not a directory; set spool_dir to a directory"
            ) from None
        raise SpoolError(f"spool dir {directory}: cannot create it: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            raise SpoolError(f"spool dir {directory}: not writable: it is on a read-only file system")
        raise SpoolError(f"spool dir {directory}: not writable by this user (uid {os.geteuid()})")


def _header(data: bytes, start: int, length: int) -> tuple[int, int, str, int] | None:
    """(seq, payload size, table, schema version) from a record's JSON header; None when it is damaged."""
    try:
        h = json.loads(data[start : start + length])
        seq, size = int(h["seq"]), int(h["size"])
        table, version = str(h["table"]), int(h["schema_version"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return None if size < 0 else (seq, size, table, version)


class Spool:
    """Thread-safe FIFO of batches on disk with a byte bound (oldest dropped, counted)."""

    def __init__(self, directory: Path | str, max_bytes: int, fsync: bool = False) -> None:
        self.dir = Path(directory)
        _usable_dir(self.dir)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.dropped = 0
        self.damaged = 0  # records skipped because their checksum or framing did not match
        self.write_errors = 0  # appends that failed (nothing of them kept)
        self.bytes = 0
        self._cond = threading.Condition()
        self._wakes = 0  # wake() calls: a waiter returns when it changes
        self._listeners: list = []  # callables told of new batches and wake() (an event loop's sender)
        self._index: dict[int, _Loc] = {}
        self._live: dict[int, int] = {}  # segment -> live batches in it
        self._active: int | None = None
        self._active_fd: int | None = None
        self._active_size = 0
        try:
            for tmp in self.dir.glob("*.tmp"):
                tmp.unlink()
            for path in sorted(self.dir.glob(f"*{SUFFIX}")):
                self._recover(path)
            next_seq, epoch = self._read_state()
            self.next_seq = max(next_seq, max(self._index, default=0) + 1)
            self._reserved_to = self.next_seq
            self.epoch = epoch or new_epoch()
            if epoch is None:  # a new spool, or one written before epochs existed
                self._write_state(self._reserved_to, self.epoch)
        except OSError as exc:
            raise SpoolError(f"spool dir {self.dir}: {exc.strerror or exc}") from None
        if self._index:
            log.info(
                "spool reopened batches=%d bytes=%d next_seq=%d epoch=%d",
                len(self._index),
                self.bytes,
                self.next_seq,
                self.epoch,
            )

    # --- recovery -------------------------------------------------------------
    def _recover(self, path: Path) -> None:
        try:
            segment = int(path.stem)
        except ValueError:
            log.warning("ignoring stray file in spool path=%s", path)
            return
        data = path.read_bytes()
        if data[: len(MAGIC)] == MAGIC or self._legacy_record(data, 0, segment) is None:
            good = self._recover_records(data, segment, path)
        else:
            good = self._recover_legacy(data, segment)
        if good < len(data):
            log.warning("spool segment had a torn record, cut off path=%s kept_bytes=%d", path, good)
            with open(path, "r+b") as f:
                f.truncate(good)
        if not self._live.get(segment):
            path.unlink()

    def _keep(self, seq: int, loc: _Loc) -> None:
        if seq in self._index:  # the same number twice can only be damage: keep the first
            self.damaged += 1
            return
        self._index[seq] = loc
        self._live[loc.segment] = self._live.get(loc.segment, 0) + 1
        self.bytes += loc.size

    def _recover_records(self, data: bytes, segment: int, path: Path) -> int:
        """Index the checksummed records of a segment; returns the end of the last good one.

        A record that does not check out is skipped by looking for the next record's magic, so one
        damaged record never takes the ones after it along."""
        pos = good = 0
        while pos + _HEAD.size <= len(data):
            rec = self._record(data, pos, segment)
            if rec is not None:
                seq, loc, end = rec
                self._keep(seq, loc)
                pos = good = end
                continue
            nxt = data.find(MAGIC, pos + 1)
            if nxt < 0:
                break  # a torn tail: cut off below
            self.damaged += 1
            log.error(
                "spool record damaged (checksum or framing), skipped path=%s offset=%d damaged_total=%d",
                path,
                pos,
                self.damaged,
            )
            pos = nxt
        return good

    @staticmethod
    def _record(data: bytes, pos: int, segment: int) -> tuple[int, _Loc, int] | None:
        """(seq, location, end) of the record at ``pos``, or None when it is torn or damaged."""
        magic, hlen, crc = _HEAD.unpack_from(data, pos)
        hstart = pos + _HEAD.size
        if magic != MAGIC or hlen > MAX_HEADER_BYTES or hstart + hlen > len(data):
            return None
        header = _header(data, hstart, hlen)
        if header is None:
            return None
        seq, size, table, version = header
        end = hstart + hlen + size
        if end > len(data) or zlib.crc32(data[hstart:end]) != crc:
            return None
        return seq, _Loc(segment, hstart + hlen, size, table, version, hlen, crc), end

    def _legacy_record(self, data: bytes, pos: int, segment: int) -> tuple[int, _Loc, int] | None:
        if pos + _LEGACY_LEN.size > len(data):
            return None
        (hlen,) = _LEGACY_LEN.unpack_from(data, pos)
        hstart = pos + _LEGACY_LEN.size
        if hlen > MAX_HEADER_BYTES or hstart + hlen > len(data):
            return None
        header = _header(data, hstart, hlen)
        if header is None:
            return None
        seq, size, table, version = header
        end = hstart + hlen + size
        if end > len(data):
            return None
        return seq, _Loc(segment, hstart + hlen, size, table, version), end

    def _recover_legacy(self, data: bytes, segment: int) -> int:
        """Index a segment of the previous format (no checksum); returns the end of the last whole record."""
        pos = 0
        while (rec := self._legacy_record(data, pos, segment)) is not None:
            seq, loc, pos = rec
            self._keep(seq, loc)
        log.info("spool segment of the previous format read segment=%d", segment)
        return pos

    def _read_state(self) -> tuple[int, int | None]:
        try:
            state = json.loads((self.dir / "state.json").read_text())
            next_seq = int(state["next_seq"])
        except FileNotFoundError:
            return 1, None
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("spool state unreadable, recovering from segments, new epoch error=%s", exc)
            return 1, None
        epoch = state.get("epoch")
        valid = isinstance(epoch, int) and not isinstance(epoch, bool) and 0 < epoch < 1 << 63
        if epoch is not None and not valid:
            log.warning("spool state has an invalid epoch, drawing a new one epoch=%r", epoch)
        return next_seq, epoch if valid else None

    def _write_state(self, next_seq: int, epoch: int) -> None:
        data = json.dumps({"next_seq": next_seq, "epoch": epoch}).encode()
        _write_atomic(self.dir / "state.json", data, self.fsync)

    def new_epoch(self) -> int:
        """Draw a new random epoch, persist it and return it (sequence numbers and batches untouched)."""
        with self._cond:
            epoch = new_epoch()
            while epoch == self.epoch:
                epoch = new_epoch()
            self._write_state(self._reserved_to, epoch)
            self.epoch = epoch
            log.info("spool epoch rotated epoch=%d next_seq=%d", epoch, self.next_seq)
            return epoch

    def _path(self, segment: int) -> Path:
        return self.dir / f"{segment:020d}{SUFFIX}"

    # --- writing --------------------------------------------------------------
    def append(self, table: str, schema_version: int, payload: bytes, notify: bool = True) -> int:
        """Store a batch; returns its sequence number. Drops the oldest batches if over the bound.

        ``notify=False`` leaves waking the sender to ``notify_appended()``, called once after several
        appends so that it sends them in one message rather than one by one as each write lets it run.

        Raises SpoolWriteError when the batch cannot be written (the disk is full): nothing of it is
        kept and no sequence number is used, so the caller may try again later."""
        with self._cond:
            seq = self.next_seq
            try:
                if seq >= self._reserved_to:  # reserve the next block before using any of it
                    self._write_state(seq + SEQ_BLOCK, self.epoch)
                    self._reserved_to = seq + SEQ_BLOCK
                if self._active_fd is None or self._active_size >= SEGMENT_BYTES:
                    self._roll(seq)
            except OSError as exc:
                self.write_errors += 1
                raise SpoolWriteError(exc.errno, exc.strerror or str(exc), str(self.dir)) from exc
            header = json.dumps(
                {"seq": seq, "table": table, "schema_version": schema_version, "size": len(payload)}
            ).encode()
            crc = zlib.crc32(payload, zlib.crc32(header))
            record = _HEAD.pack(MAGIC, len(header), crc) + header + payload
            assert self._active is not None
            self._write_record(record)
            self.next_seq = seq + 1
            offset = self._active_size + _HEAD.size + len(header)
            self._active_size += len(record)
            self._index[seq] = _Loc(
                self._active, offset, len(payload), table, schema_version, len(header), crc
            )
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
            if notify:
                self._cond.notify_all()
                self._tell()
        return seq

    def notify_appended(self) -> None:
        """Wake the senders waiting for new batches (after appends made with ``notify=False``)."""
        with self._cond:
            self._cond.notify_all()
            self._tell()

    def add_listener(self, fn) -> None:
        """Call ``fn()`` on the appending thread whenever new batches wake the waiters (it must be quick: to
        wake an event loop, say)."""
        with self._cond:
            self._listeners.append(fn)

    def remove_listener(self, fn) -> None:
        """Stop calling ``fn``."""
        with self._cond:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def _tell(self) -> None:
        for fn in self._listeners:
            fn()

    def _write_record(self, record: bytes) -> None:
        """Append the whole record or nothing: a short write goes on, a failure is cut back off."""
        fd = self._active_fd
        assert fd is not None
        view = memoryview(record)
        done = 0
        try:
            while done < len(record):
                n = os.write(fd, view[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += n
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            self.write_errors += 1
            if done or self.fsync:
                try:
                    os.ftruncate(fd, self._active_size)
                except OSError as texc:  # cannot cut it back: leave the segment, the checksum guards it
                    log.error("spool could not cut back a failed write dir=%s error=%s", self.dir, texc)
                    os.close(fd)
                    self._active_fd = None
            raise SpoolWriteError(exc.errno, exc.strerror or str(exc), str(self.dir)) from exc

    def _roll(self, first_seq: int) -> None:
        old = self._active
        fd = os.open(self._path(first_seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self._active_fd is not None:
            os.close(self._active_fd)
        self._active = first_seq
        self._active_fd = fd
        self._active_size = os.fstat(fd).st_size
        if old is not None and old != first_seq and not self._live.get(old):
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
        """Load one batch (None if it was dropped or acknowledged meanwhile, or is damaged: then it
        is forgotten and counted in ``damaged``)."""
        with self._cond:
            loc = self._index.get(seq)
        if loc is None:
            return None
        start = loc.offset - loc.header_bytes
        try:
            with open(self._path(loc.segment), "rb") as f:
                f.seek(start)
                data = f.read(loc.header_bytes + loc.size)
        except FileNotFoundError:
            return None
        if len(data) == loc.header_bytes + loc.size and (loc.crc is None or zlib.crc32(data) == loc.crc):
            return SpooledBatch(seq, loc.table, loc.schema_version, data[loc.header_bytes :])
        with self._cond:
            if self._index.get(seq) is not loc:
                return None  # acknowledged meanwhile (and its segment reused): not damage
            self._remove(seq)
            self.damaged += 1
        log.error(
            "spooled batch damaged on disk (checksum mismatch), dropped seq=%d segment=%d damaged_total=%d",
            seq,
            loc.segment,
            self.damaged,
        )
        return None

    def ack(self, seq: int) -> None:
        """The collector committed (or refused) this batch: forget it."""
        with self._cond:  # no notify: only new batches end a wait_for_more (an ack woke it for nothing)
            self._remove(seq)

    def ack_through(self, seq: int) -> int:
        """Forget every batch up to and including ``seq``; returns how many."""
        with self._cond:
            done = [s for s in self._index if s <= seq]
            for s in done:
                self._remove(s)
            # the next sequence number never follows the collector's: a collector ahead of this spool
            # is met with a new epoch by the Sender (a jump here once overflowed at 2^64)
            return len(done)

    def wake(self) -> None:
        """Wake every ``wait_for_more`` caller now (a sender ending its stream), whatever the spool holds."""
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()

    def wait_for_more(self, after: int, timeout_s: float) -> bool:
        """Block until a batch above ``after`` exists (True), or ``wake()`` or the timeout (False)."""
        with self._cond:
            wakes = self._wakes
            self._cond.wait_for(
                lambda: self._wakes != wakes or any(s > after for s in self._index), timeout_s
            )
            return any(s > after for s in self._index)

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
