"""Who runs diagnosis, alerting, isolation and replanning for a lake: one collector at a time.

The lease is a PostgreSQL session advisory lock in the lake's catalog database, taken on a
connection of its own (psycopg). Why it cannot outlive its holder:

- a holder that dies (``kill -9``, crash) closes its socket; PostgreSQL ends the session and drops
  its session locks at once, so a follower's next try (every diagnosis period) takes the lease;
- a holder that is hung but still connected, or cut off from PostgreSQL, stops renewing: the
  session runs with ``idle_session_timeout`` = the lease timeout, so the server ends it once no
  statement came for that long, which drops the lock as well. The holder renews by running a
  statement from the same loop that runs diagnosis, so a stuck diagnosis also lets the lease go;
- a holder whose renewal fails (its session was ended) stops leading before it acts again.

A lone collector (no lake) always leads (``SoleLease``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

log = logging.getLogger("c4.collector.lease")

#: The advisory lock's key pair: (class, object) = ("C4LK", 1), the lake's diagnosis lease.
LOCK_CLASS = 0x43344C4B
LOCK_OBJECT = 1
#: application_name of a collector's lease session: this prefix and its shard.
APP_PREFIX = "c4-lease "
#: Bounds on how long one lease statement may wait on the network, in seconds.
CONNECT_TIMEOUT_S = 5

HOLDER_SQL = (
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s"
)


#: Each lake collector's flush advice (``FlushAdvisor.lag_s``), in the catalog database beside the
#: lease: the leader's diagnosis looks as far behind the clock as the longest one in force.
ADVICE_TABLE = "c4_flush_advice"
ADVICE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {ADVICE_TABLE} "
    "(shard text PRIMARY KEY, lag_s double precision NOT NULL, updated timestamptz NOT NULL)"
)


#: How long a collector starting on a lake waits for another session of its shard to go (a collector that
#: was just killed: PostgreSQL ends its session as soon as it reads the closed socket).
SHARD_CHECK_WAIT_S = 5.0


def shard_served_elsewhere(conninfo: str, shard: str, wait_s: float = SHARD_CHECK_WAIT_S) -> str:
    """Where another collector of this shard is connected from ('' when none is, or PostgreSQL cannot be
    asked: the lake's own attach then says what is wrong). Two collectors of one shard would append to one
    sequence table and each prune it; every lake collector keeps a lease session named by its shard, so a
    running one is seen from its start (it takes or tries the lease before it serves)."""
    import psycopg  # lazy: only a lake collector needs it

    deadline = time.monotonic() + wait_s
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as con:
            while True:
                row = con.execute(
                    "SELECT coalesce(host(client_addr), 'a local socket (or an address this role may not see)'), backend_start FROM pg_stat_activity "
                    "WHERE application_name = %s AND pid <> pg_backend_pid() ORDER BY backend_start LIMIT 1",
                    (f"{APP_PREFIX}{shard}"[:63],),
                ).fetchone()
                if row is None:
                    return ""
                if time.monotonic() >= deadline:
                    return f"connected from {row[0]} since {row[1]:%Y-%m-%d %H:%M:%S %Z}"
                time.sleep(0.5)
    except psycopg.Error as exc:
        log.warning("could not ask the lake's catalog whether shard %s is served already: %s", shard, exc)
        return ""


class Lease(Protocol):
    """A lease on the lake's diagnosis: held by at most one collector at a time."""

    def report_lag(self, lag_s: float) -> None:
        """Record how far behind the clock this collector's agents' data may be (its flush advice)."""
        ...

    def lake_lag_s(self, fresh_s: float) -> float | None:
        """The longest lag any collector recorded within ``fresh_s`` (0.0: none); None when unknown."""
        ...

    def hold(self) -> bool:
        """Take or renew the lease (blocking); whether this collector holds it now."""
        ...

    def holder(self) -> str:
        """The shard of the collector holding the lease ('' if none)."""
        ...

    def release(self) -> None:
        """Give the lease up (on a clean stop)."""
        ...


class SoleLease:
    """The lease of a collector alone on its store: always held."""

    def __init__(self, shard: str = "") -> None:
        self.shard = shard

    def report_lag(self, lag_s: float) -> None:
        """Nobody else to tell."""

    def lake_lag_s(self, fresh_s: float) -> float | None:
        """No other collector: unknown (the caller's own advice is all there is)."""
        return None

    def hold(self) -> bool:
        """Always True."""
        return True

    def holder(self) -> str:
        """This collector."""
        return self.shard

    def release(self) -> None:
        """Nothing to give up."""


class PostgresLease:
    """The lake's diagnosis lease as a session advisory lock in PostgreSQL (see the module docstring)."""

    def __init__(self, conninfo: str, shard: str, timeout_s: float) -> None:
        self.conninfo = conninfo
        self.shard = shard
        self.timeout_s = timeout_s
        self.held = False
        self._con = None
        self._lock = threading.Lock()  # one statement at a time on the session
        self._advice_table = False  # created (if missing) on this process's first record

    def _connect(self):
        import psycopg  # lazy: only a lake collector needs it

        timeout_ms = int(self.timeout_s * 1000)
        con = psycopg.connect(
            self.conninfo,
            autocommit=True,
            application_name=f"{APP_PREFIX}{self.shard}"[:63],
            connect_timeout=CONNECT_TIMEOUT_S,
            # a cut network fails our statements within the lease timeout instead of hanging
            keepalives=1,
            keepalives_idle=max(1, int(self.timeout_s / 3)),
            keepalives_interval=max(1, int(self.timeout_s / 9)),
            keepalives_count=3,
            tcp_user_timeout=timeout_ms,
        )
        # the server ends this session, and drops the lock, once we stop renewing for timeout_s
        con.execute(f"SET idle_session_timeout = {timeout_ms}")
        con.execute(f"SET statement_timeout = {timeout_ms}")
        return con

    def _drop(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            except Exception:  # noqa: BLE001 - the session is gone either way
                pass
        self._con = None
        self.held = False

    def hold(self) -> bool:
        """Renew the lease if held (a statement on its session), else try to take it; never raises."""
        with self._lock:
            try:
                if self._con is None or self._con.closed:
                    self._drop()
                    self._con = self._connect()
                if self.held:
                    row = self._con.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND pid = pg_backend_pid() AND classid = %s AND objid = %s",
                        (LOCK_CLASS, LOCK_OBJECT),
                    ).fetchone()
                    if not row or not row[0]:
                        raise RuntimeError("the session no longer holds the lock")
                else:
                    row = self._con.execute(
                        "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, LOCK_OBJECT)
                    ).fetchone()
                    self.held = bool(row and row[0])
            except Exception as exc:  # noqa: BLE001 - any failure: we do not hold the lease
                if self.held:
                    log.warning("diagnosis lease lost shard=%s error=%s", self.shard, exc)
                else:
                    log.warning("diagnosis lease unreachable shard=%s error=%s", self.shard, exc)
                self._drop()
            return self.held

    def report_lag(self, lag_s: float) -> None:
        """Upsert this shard's lag on the lease's session (opened by ``hold``); never raises: a lag not
        recorded only leaves the leader on its last record (or, once stale, on the longest advice)."""
        with self._lock:
            if self._con is None or self._con.closed:
                return
            try:
                if not self._advice_table:
                    self._con.execute(ADVICE_DDL)
                    self._advice_table = True
                self._con.execute(
                    f"INSERT INTO {ADVICE_TABLE} (shard, lag_s, updated) VALUES (%s, %s, now()) "
                    "ON CONFLICT (shard) DO UPDATE SET lag_s = excluded.lag_s, updated = excluded.updated",
                    (self.shard, float(lag_s)),
                )
            except Exception as exc:  # noqa: BLE001 - the lease's own statements say whether it holds
                log.warning("flush advice not recorded in the catalog shard=%s error=%s", self.shard, exc)

    def lake_lag_s(self, fresh_s: float) -> float | None:
        """The longest lag recorded within ``fresh_s`` seconds (0.0 when none); None when unreadable."""
        with self._lock:
            if self._con is None or self._con.closed:
                return None
            try:
                row = self._con.execute(
                    f"SELECT coalesce(max(lag_s), 0) FROM {ADVICE_TABLE} "
                    "WHERE updated > now() - make_interval(secs => %s)",
                    (float(fresh_s),),
                ).fetchone()
            except Exception:  # noqa: BLE001 - e.g. no collector has recorded one yet (no table)
                return None
        return float(row[0]) if row else 0.0

    def holder(self) -> str:
        """The shard of the collector holding the lease ('' if none or PostgreSQL is unreachable)."""
        with self._lock:
            try:
                if self._con is None or self._con.closed:
                    return self.shard if self.held else ""
                row = self._con.execute(HOLDER_SQL, (LOCK_CLASS, LOCK_OBJECT)).fetchone()
            except Exception:  # noqa: BLE001
                return ""
        return row[0].removeprefix(APP_PREFIX) if row else ""

    def release(self) -> None:
        """Unlock and close the session (a follower takes over at its next try)."""
        with self._lock:
            if self._con is not None and self.held:
                try:
                    self._con.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, LOCK_OBJECT))
                except Exception:  # noqa: BLE001 - closing the session releases it anyway
                    pass
            self._drop()
