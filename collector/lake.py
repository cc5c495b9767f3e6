"""Scale-out store: several collectors, each serving a shard of agents, write into one DuckLake.

The lake's catalog lives in PostgreSQL and its data as Parquet files under a shared path; DuckDB's
ducklake and postgres_scanner extensions come from the ``duckdb-extension-*`` wheels (loaded from
their files: these machines reach no extension repository). Each collector keeps the exactly-once
bookkeeping of its own agents in its own table (``_c4_agent_seq_<shard>``), written in the same lake
transaction as the rows; an agent that fails over to another collector is looked up across every
shard's table, so nothing committed before the failover is stored twice.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

import duckdb

from c4.catalogue import Catalogue
from c4.collector.lake_upkeep import UpkeepResult
from c4.collector.lake_upkeep_process import UpkeepChild
from c4.collector.sequence import AgentSeq
from c4.collector.store import SEQ_TABLE, Store
from c4.sql_text import string_literal

log = logging.getLogger("c4.collector.lake")

LAKE = "lake"
#: How often a collector retries creating the lake's schema when another one created part of it first.
SCHEMA_ATTEMPTS = 10
#: How often retention tries one table's DELETE that conflicted with another shard's insert.
DELETE_ATTEMPTS = 5


class LakeError(ValueError):
    """The lake URL, data path or extensions are unusable; the message says which."""


def extension_file(package: str, name: str) -> Path:
    """The extension binary shipped in a ``duckdb-extension-*`` wheel."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LakeError(f"the {package} package is not installed (pip install {package.replace('_', '-')})")
    found = sorted(Path(spec.submodule_search_locations[0]).glob(f"extensions/*/{name}.duckdb_extension"))
    if not found:
        raise LakeError(f"{package} holds no {name}.duckdb_extension")
    return found[-1]


def load_lake_extensions(con: duckdb.DuckDBPyConnection) -> None:
    """Load postgres_scanner and ducklake from their wheels."""
    for package, name in (
        ("duckdb_extension_postgres_scanner", "postgres_scanner"),
        ("duckdb_extension_ducklake", "ducklake"),
    ):
        con.execute(f"LOAD '{extension_file(package, name)}'")


def conninfo(url: str) -> str:
    """``postgres://user:pw@host:port/db?k=v`` -> a libpq key=value string, both read by libpq itself
    (several hosts, a socket directory as host, percent-encoding; values quoted as libpq reads them)."""
    import psycopg  # lazy: only a lake collector needs it
    from psycopg.conninfo import conninfo_to_dict, make_conninfo  # lazy: as psycopg

    is_url = "://" in url.split("=", 1)[0]  # a key=value string may hold '://' in a value
    if is_url and url.partition("://")[0].lower() not in ("postgres", "postgresql"):
        raise LakeError(f"lake URL {shown_url(url)!r}: expected postgres://user@host:port/dbname")
    try:
        items = conninfo_to_dict(url)
    except psycopg.Error:  # libpq's message quotes the text it stopped at, which may be the password
        raise LakeError(
            f"lake {shown_url(url)!r} is not a PostgreSQL URL or key=value string that libpq reads "
            "(percent-encode '/', '#', '?' and '@' in a URL's password; quote a value with spaces)"
        ) from None
    if not all(port.strip().isdigit() for port in str(items.get("port") or "5432").split(",")):
        # libpq read part of the URL as a port: an unencoded '/' or '?' in its password, most likely
        raise LakeError(
            f"lake {shown_url(url)!r}: its port is not a number (percent-encode '/', '#', '?' and '@' in a "
            "URL's password)"
        )
    if is_url and not items.get("dbname"):  # libpq would take the user's name: say it
        raise LakeError(f"lake URL {shown_url(url)!r} names no database")
    return make_conninfo(**items)


def without_password(info: str) -> tuple[str, str]:
    """A libpq key=value string (as ``conninfo`` gives) without its ``password`` item, and that password
    ('' if none)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo  # lazy: only a lake collector needs it

    items = conninfo_to_dict(info)
    password = str(items.pop("password", "") or "")
    return make_conninfo(**items), password


#: A ``password`` item of a key=value string, its value quoted as libpq quotes or not.
_PASSWORD_ITEM = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")
#: From ``password=`` to the end: how an unreadable key=value string is shown.
_PASSWORD_TO_END = re.compile(r"(?is)(\bpassword\s*=\s*).*")


def shown_url(url: str) -> str:
    """The lake URL or key=value string as logs and messages show it: its password, wherever libpq would
    find one (the URL's user part, its query, a key=value item), as ``***``."""
    import psycopg  # lazy: only a lake collector needs it
    from psycopg.conninfo import conninfo_to_dict, make_conninfo  # lazy: as psycopg

    try:
        items = conninfo_to_dict(url)
    except psycopg.Error:
        items = None
    if "://" not in url.split("=", 1)[0]:
        if items is None:
            return _PASSWORD_TO_END.sub(lambda m: m.group(1) + "***", url)
        shown = _PASSWORD_ITEM.sub(lambda m: m.group(1) + "***", url)  # the operator's order and spacing
        if conninfo_to_dict(shown).get("password", "***") == "***":
            return shown
        return make_conninfo(**{k: "***" if k == "password" else v for k, v in items.items()})
    scheme, _, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")  # the last '@': an unencoded one may be in the password
    if at and ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":***"
    base, mark, query = f"{userinfo}{at}{hostpart}".partition("?")
    if mark:  # ?password=... (its key percent-encoded or not)
        query = "&".join(
            f"{item.partition('=')[0]}=***"
            if unquote(item.partition("=")[0]).strip().lower() == "password"
            else item
            for item in query.split("&")
        )
    shown = f"{scheme}://{base}{mark}{query}"
    if items is not None:  # what libpq reads the shown form as must hold no password but the mask
        try:
            if conninfo_to_dict(shown).get("password", "***") != "***":
                return f"{scheme}://***"
        except psycopg.Error:
            return f"{scheme}://***"
    return shown


#: How a DuckDB instance whose DuckLake state went bad answers (1.5.5, after another process flushed
#: inlined rows the instance had read, duckdb/ducklake#1225 and #1359): an internal error, which
#: invalidates the instance; then its refusals; or a catalog read that failed in PostgreSQL, after which
#: every read of that table fails alike.
_FAILED_INSTANCE = ("database has been invalidated", "attempting to fetch from an unsuccessful query result")


def _invalidating(exc: BaseException) -> bool:
    """Whether ``exc`` says the DuckDB instance that raised it must be replaced (``_FAILED_INSTANCE``)."""
    text = str(exc).lower()
    return isinstance(exc, duckdb.InternalException) or any(says in text for says in _FAILED_INSTANCE)


def _lost_race(exc: duckdb.Error) -> bool:
    """Whether ``exc`` says another collector created the same lake object first."""
    text = str(exc).lower()
    return "conflict" in text or "duplicate key" in text or "already exists" in text


def lake_data_path(data_path: str) -> str:
    """The data path as DuckLake keeps it in the catalog: absolute with a trailing slash, symlinks kept, so
    that storage moved behind a symlink or mounted at the same path is still the same lake (an ``s3://``
    URL as it is)."""
    return data_path if "://" in data_path else os.path.abspath(data_path) + "/"


def attach_lake(
    con: duckdb.DuckDBPyConnection,
    url: str,
    data_path: str,
    read_only: bool = False,
    check_storage: bool = True,
) -> str:
    """Attach the lake as ``lake``, make it the default catalog (``read_only``: every write fails) and return
    the data path it was attached with (``check_storage`` False: another attach of this process looked at
    the data path's files already).

    A password in the URL goes to libpq through ``PGPASSWORD``, not into the attached database's
    path, which any reader sees in ``duckdb_databases()``. ``data_path`` must be the directory the catalog
    names (a lake created before C4 kept symlinks names the directory they led to); another directory is
    refused, and so is one holding none of the lake's newest and oldest files (its storage not mounted).
    """
    load_lake_extensions(con)
    data = lake_data_path(data_path)
    if "://" not in data_path:
        Path(data).mkdir(parents=True, exist_ok=True)
    info, password = without_password(conninfo(url))
    if password:
        os.environ["PGPASSWORD"] = password
    mode = ", READ_ONLY" if read_only else ""
    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            _attach(con, info, data, mode)
            break
        except duckdb.Error as exc:
            stored = _stored_data_path(exc)
            if stored is not None and _same_directory(data, stored):
                data = stored  # the same directory by another name (the catalog keeps a resolved symlink)
                continue
            if stored is not None:
                raise LakeError(
                    f"cannot attach the lake at {shown_url(url)}: its catalog keeps its files under {stored}, "
                    f"and lake_data_path is {data}, another directory. Every collector of a lake reads and writes "
                    "under the one data path its catalog names (DuckLake cannot change it): mount or link the "
                    "lake's storage there and set lake_data_path to it"
                ) from None
            # collectors starting together on a new lake race to create its catalog: the loser attaches
            # the winner's
            if not _lost_race(exc) or attempt == SCHEMA_ATTEMPTS:
                raise LakeError(f"cannot attach the lake at {shown_url(url)}: {exc}") from None
            log.info("lake catalog created meanwhile by another collector, attach again attempt=%d", attempt)
            time.sleep(0.1 * attempt)
    if check_storage and "://" not in data:
        _check_storage(con, url, data)
    con.execute(f"USE {LAKE}")
    return data


def _attach(con: duckdb.DuckDBPyConnection, info: str, data: str, mode: str) -> None:
    con.execute(
        f"ATTACH {string_literal('ducklake:postgres:' + info)} AS {LAKE} (DATA_PATH {string_literal(data)}{mode})"
    )


#: DuckLake's refusal of a data path unlike the one its catalog stored (ducklake_initializer.cpp, 1.5.5).
_MISMATCH = re.compile(r'does not match existing data path in the catalog "(.*)"\.', re.DOTALL)
#: How many of the lake's newest data files, and of its oldest, are looked for under the data path at attach.
FILES_CHECKED_AT_EACH_END = 3


def _stored_data_path(exc: duckdb.Error) -> str | None:
    """The catalog's data path when ``exc`` is DuckLake refusing ours for being another, else None."""
    found = _MISMATCH.search(str(exc))
    return found.group(1) if found else None


def _same_directory(data: str, stored: str) -> bool:
    if "://" in data or "://" in stored:
        return False
    try:
        return os.path.samefile(data, stored)
    except OSError:  # the catalog's directory is gone or unreachable here
        return False


def _check_storage(con: duckdb.DuckDBPyConnection, url: str, data: str) -> None:
    """Refuse a data path that holds none of the lake's newest and oldest files (its share not mounted): the
    collector would write into the empty directory while every read of the lake's files failed."""
    try:
        missing, checked = _missing_sampled_files(con, data)
    except duckdb.Error as exc:
        raise LakeError(f"cannot read the lake's file list at {shown_url(url)}: {exc}") from None
    if checked and len(missing) == checked:
        con.execute(f"DETACH {LAKE}")
        raise LakeError(
            f"the lake at {shown_url(url)} keeps its files under {data}, but none of the {checked} of its newest "
            f"and oldest files looked for is there (no {missing[0]}): is the lake's storage mounted?"
        )
    for path in missing:  # some there, some not: reads of those fail; ingest goes on
        log.error("a live file of the lake is missing from its data path path=%s", path)


def _missing_sampled_files(con: duckdb.DuckDBPyConnection, data: str) -> tuple[list[str], int]:
    """Of the lake's newest and oldest live data files (at most ``FILES_CHECKED_AT_EACH_END`` of each), those not
    on disk under the data path ``data``, and how many were looked for."""
    meta = f"__ducklake_metadata_{LAKE}"
    live = f"""
        SELECT f.data_file_id,
               CASE WHEN NOT f.path_is_relative THEN f.path
                    WHEN NOT t.path_is_relative THEN t.path || f.path
                    WHEN NOT s.path_is_relative THEN s.path || t.path || f.path
                    ELSE $data || s.path || t.path || f.path END AS path
        FROM {meta}.ducklake_data_file f
        JOIN {meta}.ducklake_table t ON t.table_id = f.table_id AND t.end_snapshot IS NULL
        JOIN {meta}.ducklake_schema s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
        WHERE f.end_snapshot IS NULL"""
    rows = con.execute(
        f"""
        SELECT DISTINCT path FROM (
            (SELECT * FROM ({live}) ORDER BY data_file_id DESC LIMIT {FILES_CHECKED_AT_EACH_END})
            UNION ALL
            (SELECT * FROM ({live}) ORDER BY data_file_id LIMIT {FILES_CHECKED_AT_EACH_END})
        )
        """,
        {"data": data},
    ).fetchall()
    return [path for (path,) in rows if not os.path.exists(path)], len(rows)


def shard_table(shard: str) -> str:
    """The bookkeeping table of one collector's shard."""
    return f"{SEQ_TABLE}_{re.sub(r'[^a-z0-9_]', '_', shard.lower())}"


class LakeStore(Store):
    """A Store whose tables live in a DuckLake shared by several collectors (one shard each)."""

    def __init__(
        self,
        url: str,
        data_path: str,
        catalogue: Catalogue,
        shard: str,
        threads: int = 0,
        query_memory_bytes: int = 0,
    ) -> None:
        self.url = url
        self.data_path = data_path
        self.attached_data_path = lake_data_path(data_path)  # as the catalog names it (attach_lake)
        self.shard = shard
        self.seq_table = shard_table(shard)
        self._wanted: set[str] = set()  # agents waiting for a lookup
        self._wanted_lock = threading.Lock()
        self._lookup_lock = threading.Lock()
        self.delete_conflicts = 0  # retention DELETEs that conflicted with another shard's commit
        self.upkeep_child = UpkeepChild()  # runs the lake's upkeep passes (upkeep)
        super().__init__(Path(data_path) / f"{self.seq_table}.marker", catalogue, threads=threads)
        self._reader_args = (threads, query_memory_bytes)
        self._reader_lock = threading.Lock()
        self._reader_failed: duckdb.DuckDBPyConnection | None = None  # failed internally: replace it
        #: query instances that failed internally, replaced and left unclosed (see ``_replace_reader``)
        self._parked: list[duckdb.DuckDBPyConnection] = []
        self.reader = self._open_reader(threads, query_memory_bytes)

    def _open_reader(self, threads: int, memory_bytes: int) -> duckdb.DuckDBPyConnection:
        """A second DuckDB instance that attached the lake READ_ONLY, for untrusted SQL.

        Its lake catalog is attached read-only too, so PostgreSQL itself runs its transactions
        READ ONLY; its memory limit is the queries' alone (``memory_bytes``, 0 = DuckDB's default).
        """
        con = duckdb.connect()
        # the writer's attach (Store.__init__, before this) looked at the data path's files
        self.attached_data_path = attach_lake(
            con, self.url, self.data_path, read_only=True, check_storage=False
        )
        if memory_bytes:
            con.execute(f"SET memory_limit = '{int(memory_bytes)}B'")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        self._lock_down_con(con)
        return con

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        self.attached_data_path = attach_lake(con, self.url, self.data_path)
        log.info(
            "lake attached url=%s data_path=%s shard=%s",
            shown_url(self.url),
            self.attached_data_path,
            self.shard,
        )
        return con

    def _lock_down(self) -> None:
        self._lock_down_con(self.con)

    def _invalidated_by(self, exc: BaseException, probe: bool = False) -> bool:
        """Whether the writer's instance went bad (``_invalidating``; recorded in ``invalidated``, and the
        next commit attaches the lake again, ``Store._reopen``). A lake has no file of its own to
        checkpoint, but DuckLake 1.5.5 fails in an instance that read a table whose inlined rows span two
        schema versions (another collector added a column) once an upkeep pass flushed them: internally,
        which invalidates the instance, or on every later read of the table. Nothing committed is lost: it
        is in the lake."""
        if not _invalidating(exc):
            return False
        self.invalidated = str(exc).replace("\n", " ")
        log.error("the lake's writer instance failed internally; it attaches the lake again error=%s", exc)
        return True

    def _lock_down_con(self, con: duckdb.DuckDBPyConnection) -> None:
        data = self.attached_data_path
        if "://" not in data:  # the lake reads its own Parquet files (by their path or where a symlink leads)
            dirs = dict.fromkeys([data, os.path.realpath(data) + "/"])
            con.execute(f"SET allowed_directories = [{', '.join(string_literal(d) for d in dirs)}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")

    def _create_schema(self) -> None:
        """The lake's tables and views; collectors starting together on a new lake race to create them:
        the loser's transaction conflicts and is retried (every statement is create-if-missing)."""
        for attempt in range(1, SCHEMA_ATTEMPTS + 1):
            try:
                super()._create_schema()
                return
            except duckdb.Error as exc:
                if not _lost_race(exc) or attempt == SCHEMA_ATTEMPTS:
                    raise
                log.info("lake schema created meanwhile by another collector, again attempt=%d", attempt)
                time.sleep(0.1 * attempt)

    def _default_threads(self) -> int:
        """DuckDB's own default (one per core): one thread per core but one is measured for the file store only."""
        return 0

    def _create_seq_table(self) -> None:
        # DuckLake has no primary keys: each shard rewrites only its own agents' rows
        self.con.execute(
            f"CREATE TABLE IF NOT EXISTS {self.seq_table} "
            "(agent_id VARCHAR, last_seq UBIGINT NOT NULL, updated TIMESTAMP NOT NULL, epoch UBIGINT)"
        )
        self._add_epoch_column(self.seq_table)

    def _create_view(self, ddl: str) -> None:
        try:
            self.con.execute(ddl)
        except duckdb.Error as exc:  # another collector created it at the same moment
            log.info("view not (re)created, it exists error=%s", exc)

    def _seq_tables(self, cur: duckdb.DuckDBPyConnection) -> list[str]:
        rows = cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND table_name LIKE ?",
            [LAKE, f"{SEQ_TABLE}_%"],
        ).fetchall()
        return [r[0] for r in rows]

    def _load_seqs(self) -> dict[str, AgentSeq]:
        return self._newest_seqs(self.con, self.seq_table)

    @staticmethod
    def _newest_seqs(
        cur: duckdb.DuckDBPyConnection, source: str, where: str = "", params=()
    ) -> dict[str, AgentSeq]:
        """Per agent, from append-only sequence rows: the epoch of its newest row and the highest
        sequence committed in that epoch (a new epoch starts over below the old one's)."""
        rows = cur.execute(
            f"WITH s AS (SELECT agent_id, last_seq, updated, coalesce(epoch, 0) AS epoch FROM {source} {where}), "
            "e AS (SELECT agent_id, arg_max(epoch, updated) AS epoch FROM s GROUP BY 1) "
            "SELECT e.agent_id, max(s.last_seq), e.epoch FROM e JOIN s USING (agent_id) "
            "WHERE s.epoch = e.epoch GROUP BY e.agent_id, e.epoch",
            list(params),
        ).fetchall()
        return {a: AgentSeq(int(s or 0), int(e or 0)) for a, s, e in rows}

    def _lookup_seqs(self, agents: set[str]) -> dict[str, AgentSeq]:
        """The agents' last sequences committed by any shard (they may have failed over from another
        collector), in one query over every shard's table."""
        cur = self.cursor()
        try:
            tables = self._seq_tables(cur)
            found = dict.fromkeys(agents, AgentSeq())
            if not tables or not agents:
                return found
            union = " UNION ALL ".join(f"SELECT agent_id, last_seq, updated, epoch FROM {t}" for t in tables)
            found.update(
                self._newest_seqs(
                    cur, f"({union})", "WHERE agent_id IN (SELECT unnest($1::VARCHAR[]))", [sorted(agents)]
                )
            )
            return found
        finally:
            cur.close()

    def known_seq(self, agent_id: str) -> int:
        """The agent's last committed sequence, across every shard the first time this collector sees it.

        Called off the event loop. Agents that connect at the same moment share one lookup (a
        thousand agents reconnecting after a collector restart make a few queries, not a thousand),
        and the lookup never waits for a commit in progress.
        """
        known = self.book.agents
        with self._wanted_lock:
            if agent_id in known:
                return known[agent_id].last_seq
            self._wanted.add(agent_id)
        with self._lookup_lock:
            with self._wanted_lock:
                if agent_id in known:
                    return known[agent_id].last_seq
                wanted, self._wanted = self._wanted | {agent_id}, set()
            found = self._lookup_seqs(wanted)
            with self._wanted_lock:
                for agent, seq in found.items():  # a commit meanwhile knows better: keep its value
                    known.setdefault(agent, seq)
                return known.get(agent_id, found[agent_id]).last_seq

    def _commit_group(self, batches):
        unknown = {b.agent_id for b in batches if b.seq and b.agent_id not in self.book.agents}
        unknown |= {agent for b in batches for agent, _ in b.opens if agent not in self.book.agents}
        if unknown:  # e.g. an agent that pushes without a Hello to this collector
            for agent, seq in self._lookup_seqs(unknown).items():
                self.book.agents.setdefault(agent, seq)
        return super()._commit_group(batches)

    def _seq_insert_sql(self) -> str:
        # append only: a DELETE per commit left one delete file per touched data file in the lake,
        # so every commit got slower; readers take each agent's newest epoch and its highest
        # sequence (see _newest_seqs), retention prunes
        return f"INSERT INTO {self.seq_table} SELECT agent_id, last_seq, updated, epoch FROM _c4_seq_in"

    def prune_seqs(self) -> int:
        """Delete this shard's superseded sequence rows (each agent's newest one stays); rows deleted.

        Each shard prunes its own table: only it appends there, so the DELETE never conflicts with
        another collector's commit (DuckLake refuses a DELETE on a table another transaction inserted
        into meanwhile, and the reverse).
        """
        with self._lock:
            row = self.con.execute(
                f"DELETE FROM {self.seq_table} AS s WHERE s.updated < "
                f"(SELECT max(n.updated) FROM {self.seq_table} AS n WHERE n.agent_id = s.agent_id)"
            ).fetchone()
        return int(row[0]) if row and row[0] else 0

    def _delete_where(self, op: str, time_expr: str) -> dict[str, int]:
        """Retention on the lake: a table's DELETE that conflicts with another shard's insert committed
        meanwhile is tried again (up to ``DELETE_ATTEMPTS``), then left to the next retention pass."""
        deleted: dict[str, int] = {}
        for spec in self.catalogue:
            if not spec.retention or not spec.time_column:
                continue
            sql = f'DELETE FROM "{spec.name}" WHERE "{spec.time_column}" {op} {time_expr}'
            for attempt in range(1, DELETE_ATTEMPTS + 1):
                try:
                    with self._lock:
                        n = self.con.execute(sql).fetchone()
                    break
                except duckdb.TransactionException as exc:
                    if "conflict" not in str(exc).lower():
                        raise
                    self.delete_conflicts += 1
                    if attempt == DELETE_ATTEMPTS:
                        log.warning(
                            "retention delete conflicted with other shards' commits, next pass table=%s "
                            "attempts=%d",
                            spec.name,
                            attempt,
                        )
                        n = None
            if n and n[0]:
                deleted[spec.name] = int(n[0])
        return deleted

    def upkeep(self, snapshot_keep_s: float, file_keep_s: float, timeout_s: float = 3600.0) -> UpkeepResult:
        """One pass of the lake's file upkeep (``c4.collector.lake_upkeep``) in a child process
        (``c4.collector.lake_upkeep_process``: a native crash in DuckLake's maintenance costs the pass, not
        the collector; a pass still running after ``timeout_s`` is killed); the writer keeps committing
        meanwhile."""
        return self.upkeep_child.run(self.url, self.data_path, snapshot_keep_s, file_keep_s, timeout_s)

    def note_failure(self, exc: BaseException) -> None:
        """A periodic task (diagnosis, rollups, retention) failed with ``exc``: when that says the writer's
        instance went bad (``_invalidating``), it is marked so, and the next commit or cursor attaches the
        lake again (DuckLake 1.5.5 keeps failing every read of the table in that instance)."""
        if not self.invalidated and _invalidating(exc):
            with self._lock:
                if not self.invalidated:
                    self._invalidated_by(exc)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A reader cursor on the lake (every shard's rows); first a new instance if the writer's failed."""
        if self.invalidated:
            with self._lock:
                self._usable()
        cur = self.con.cursor()
        cur.execute(f"USE {LAKE}")
        return cur

    def _query_instance(self) -> duckdb.DuckDBPyConnection:
        """The read-only instance that runs untrusted SQL."""
        return self.reader

    def _read_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of the read-only instance on the lake (every shard's rows). An instance that failed
        internally (see ``_invalidated_by``; DuckDB may invalidate it, or DuckLake keep failing on the
        same table) is replaced by a new one first."""
        reader = self.reader
        if reader is self._reader_failed:  # a query failed internally in it (``reading``)
            self._replace_reader(reader, "a query failed internally in it")
        else:
            try:
                cur = reader.cursor()
                cur.execute(f"USE {LAKE}")
                return cur
            except duckdb.Error as exc:
                if not _invalidating(exc):
                    raise
                self._replace_reader(reader, exc)
        cur = self.reader.cursor()
        cur.execute(f"USE {LAKE}")
        return cur

    def _replace_reader(self, reader: duckdb.DuckDBPyConnection, why: object) -> None:
        """A new query instance in place of ``reader``, which is kept, not closed (``_parked``): closing an
        instance DuckLake failed in may end a transaction in it, which aborts the process."""
        with self._reader_lock:
            if self.reader is not reader:  # replaced meanwhile by another query's thread
                return
            log.error("the lake's query instance failed internally; attaching the lake again error=%s", why)
            self.reader = self._open_reader(*self._reader_args)
            self._parked.append(reader)

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of the query instance for untrusted SQL, each statement its own transaction: the
        instance attached the lake and its catalog read-only (PostgreSQL itself runs them READ ONLY), so
        no ``BEGIN TRANSACTION READ ONLY`` is needed, and DuckDB aborts the process when a transaction
        ends in an instance DuckLake failed internally in (tried: ROLLBACK and closing the cursor both
        did, SIGABRT). A query that fails so marks the instance for replacement (``_read_cursor``)."""
        cur = self._read_cursor()
        used = self.reader
        try:
            yield cur
        except duckdb.Error as exc:
            if _invalidating(exc):
                self._reader_failed = used
            raise
        finally:
            cur.close()

    def checkpoint(self) -> None:
        """Nothing to flush: every lake transaction is durable in PostgreSQL and the data files."""

    def close(self) -> None:
        """Detach the lake (an upkeep pass running now is killed: its lake transaction rolls back)."""
        self.upkeep_child.kill()
        with self._lock:
            self.reader.close()
            self.con.close()
