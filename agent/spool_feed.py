"""Feeds batches to the spool in order, holding them in memory while the spool cannot be written."""

from __future__ import annotations

import logging
from collections import deque

from c4.agent.spool import Spool

log = logging.getLogger("c4.agent")


class SpoolFeed:
    """Appends batches to a Spool; while appends fail (a full disk) they wait in memory, in order.

    Held batches are spooled first on the next ``feed``, so sequence numbers keep the order they were
    made in. Past ``hold_max_bytes`` the oldest held batch is dropped and counted in ``unspooled``.
    An episode (first failure to the next success) is logged once when it starts and once when it ends.
    """

    def __init__(self, spool: Spool, hold_max_bytes: int) -> None:
        self.spool = spool
        self.hold_max_bytes = hold_max_bytes
        self.unspooled = 0  # batches lost: the spool stayed unwritable longer than the hold lasted
        self.error = ""  # why the spool cannot be written now ('' while it can)
        self._held: deque[tuple[str, int, bytes]] = deque()
        self._held_bytes = 0
        self._late = 0  # batches of the current episode spooled once space returned
        self._episode_unspooled = 0

    @property
    def held(self) -> int:
        """Batches waiting in memory for the spool."""
        return len(self._held)

    def feed(self, batches: list[tuple[str, int, bytes]]) -> None:
        """Queue (table, schema_version, payload) batches and spool everything queued that fits."""
        for batch in batches:
            self._held.append(batch)
            self._held_bytes += len(batch[2])
        try:
            self._spool_held()
        finally:  # the sender wakes once for all of this flush's batches: one message, not one each
            self.spool.notify_appended()

    def _spool_held(self) -> None:
        """Spool the held batches in order, as far as the spool takes them."""
        while self._held:
            table, version, payload = self._held[0]
            try:
                self.spool.append(table, version, payload, notify=False)
            except OSError as exc:
                self._failed(exc)
                return
            self._held.popleft()
            self._held_bytes -= len(payload)
            self._late += 1
        if self.error:
            log.warning(
                "spool writable again dir=%s batches_spooled_late=%d batches_unspooled=%d",
                self.spool.dir,
                self._late,
                self._episode_unspooled,
            )
            self.error = ""
        self._late = self._episode_unspooled = 0

    def _failed(self, exc: OSError) -> None:
        if not self.error:
            log.error(
                "spool write failed, holding batches in memory until it can be written dir=%s error=%s "
                "spool_hold_max_bytes=%d",
                self.spool.dir,
                exc.strerror or exc,
                self.hold_max_bytes,
            )
            self._late = self._episode_unspooled = 0
        self.error = str(exc.strerror or exc)
        while self._held and self._held_bytes > self.hold_max_bytes:
            _, _, payload = self._held.popleft()
            self._held_bytes -= len(payload)
            self.unspooled += 1
            self._episode_unspooled += 1
            if self._episode_unspooled == 1:
                log.error(
                    "spool still not writable and the memory hold is full: dropping the oldest batches "
                    "dir=%s spool_hold_max_bytes=%d",
                    self.spool.dir,
                    self.hold_max_bytes,
                )

    def close(self) -> None:
        """Say how many held batches are lost because the agent stops before the spool took them."""
        if self._held:
            log.error(
                "agent stopped with batches the spool could not take: lost batches=%d dir=%s error=%s",
                len(self._held),
                self.spool.dir,
                self.error,
            )
