"""The lake's file upkeep, run by the lease holder on a schedule (``lake_upkeep_interval_s``).

Every lake commit writes at least one Parquet file per table it touches (a batch of at most
DuckLake's inlining limit, 10 rows, goes into the catalog instead) and a snapshot row; left alone a
busy lake grows its file list and catalog without bound, and every query plans over all of it. One
pass, each step its own lake transaction, in the order DuckLake's own ``CHECKPOINT`` runs them:

1. ``ducklake_flush_inlined_data``: rows inlined in the catalog become Parquet files; called per table
   that has inlined rows or deletions (``tables_with_inlined_rows``: two catalog queries), since the
   call over the whole lake visits every table, ~90 ms each with nothing to flush;
2. ``ducklake_merge_adjacent_files``: each table's small files become few large ones (the old ones
   are scheduled for deletion; readers still on an older snapshot read them meanwhile);
3. ``ducklake_expire_snapshots``: snapshots older than ``lake_snapshot_keep_s`` go (C4 reads only
   the newest; what they alone referenced is scheduled for deletion);
4. ``ducklake_cleanup_old_files``: files scheduled for deletion more than ``lake_file_keep_s`` ago are
   deleted from the data path (keep it above the longest query, ``query_timeout_s``);
5. ``ducklake_delete_orphaned_files`` as a dry run: Parquet files under the data path that this lake's
   catalog has never listed, over ``ORPHAN_AGE_S`` old, are counted (``orphans_found``) and left alone.
   A commit or a pass that was killed leaves such files behind; so does any other writer of the
   directory, and DuckLake tells them apart only by path: another lake sharing the data path, an
   operator's export or a commit in flight would be deleted with them (all three tried).

Every step runs even when an earlier one failed (on a full disk the flush fails while the cleanup
would free space); a failed step is named in ``errors`` and the pass counts as failed. A step that
conflicts with a shard's commit (DuckLake refuses some pairs of concurrent changes to one table) is
logged and left to the next pass.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

import duckdb

from c4.sql_text import quote_name, string_literal

log = logging.getLogger("c4.collector.lake_upkeep")

#: The lake's catalog as DuckDB attaches it next to the lake (``lake`` -> ``__ducklake_metadata_lake``).
METADATA = "__ducklake_metadata_lake"


@dataclass
class UpkeepResult:
    """What one upkeep pass did, and the lake before and after it."""

    files_before: int = 0
    files_after: int = 0
    snapshots_before: int = 0
    snapshots_after: int = 0
    inlined_rows_flushed: int = 0
    files_merged: int = 0  # files replaced by merged ones
    files_created: int = 0  # merged files written
    snapshots_expired: int = 0
    files_deleted: int = 0  # from the data path
    orphans_found: int = 0  # Parquet files over ORPHAN_AGE_S old the catalog never listed (not deleted)
    conflicts: list[str] = field(default_factory=list)  # steps left to the next pass
    errors: list[str] = field(default_factory=list)  # "step: error" of each step that failed
    step_s: dict[str, float] = field(default_factory=dict)  # wall seconds of each step (where a pass goes)
    seconds: float = 0.0

    def counters(self) -> dict[str, int]:
        """The collector counters this pass adds to (``lake_upkeep_*``)."""
        return {
            "lake_upkeep_inlined_rows_flushed": self.inlined_rows_flushed,
            "lake_upkeep_files_merged": self.files_merged,
            "lake_upkeep_files_created": self.files_created,
            "lake_upkeep_snapshots_expired": self.snapshots_expired,
            "lake_upkeep_files_deleted": self.files_deleted,
            "lake_upkeep_step_errors": len(self.errors),
            "lake_upkeep_conflicts": len(self.conflicts),
        }


#: Unlisted files at least this old are counted as orphans (a commit or a pass in flight is far younger).
ORPHAN_AGE_S = 86400.0


def interval_sql(seconds: float) -> str:
    """A SQL interval of ``seconds`` (fixed-point: DuckDB reads no exponent, '1e+20 seconds' fails)."""
    return f"INTERVAL '{float(seconds):.6f} seconds'"


def live_files(cur: duckdb.DuckDBPyConnection) -> int:
    """Data files the newest snapshot of the lake reads (every table)."""
    return cur.execute(
        f"SELECT count(*) FROM {METADATA}.ducklake_data_file WHERE end_snapshot IS NULL"
    ).fetchone()[0]


def snapshots(cur: duckdb.DuckDBPyConnection) -> int:
    """Snapshots the lake's catalog keeps."""
    return cur.execute(f"SELECT count(*) FROM {METADATA}.ducklake_snapshot").fetchone()[0]


#: DuckLake's inlined storage in its catalog (1.5.5, ``ducklake_metadata_manager.cpp``): a table's rows
#: per schema version, the deletions of rows of its files, and the registry of the former. A catalog
#: holding any other ``ducklake_inlined_*`` table is flushed whole: its rows might otherwise stay there.
_INLINED_DATA = re.compile(r"ducklake_inlined_data_(\d+)_(\d+)")
_INLINED_DELETE = re.compile(r"ducklake_inlined_delete_(\d+)")
_INLINED_REGISTRY = "ducklake_inlined_data_tables"


def _catalog_rows(cur: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    """Rows of ``sql`` run by the catalog's PostgreSQL itself."""
    return cur.execute(
        f"SELECT * FROM postgres_query({string_literal(METADATA)}, {string_literal(sql)})"
    ).fetchall()


def tables_with_inlined_rows(cur: duckdb.DuckDBPyConnection) -> list[tuple[str, str]] | None:
    """(schema, table) of each live table of the lake with rows or deletions inlined in the catalog, or
    None when that cannot be told for sure (the catalog's schema not found, an inlined table of a kind
    not known here, or one its registry names missing): then the whole lake is to be flushed."""
    found = _catalog_rows(
        cur,
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND c.relname LIKE 'ducklake\\_inlined\\_%' "
        "AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass('ducklake_metadata'))",
    )
    spaces = {space for space, _ in found}
    if len(spaces) != 1:  # no registry either: the metadata schema is not on the search path
        return None
    space = quote_name(spaces.pop())
    names = {name for _, name in found}
    if _INLINED_REGISTRY not in names:
        return None
    owners: dict[str, int] = {}  # inlined table -> the lake table it holds rows of
    for name in names - {_INLINED_REGISTRY}:
        kind = _INLINED_DATA.fullmatch(name) or _INLINED_DELETE.fullmatch(name)
        if kind is None:
            log.warning(
                "lake upkeep: unknown inlined storage in the catalog, flushing every table name=%s", name
            )
            return None
        owners[name] = int(kind.group(1))
    registered = {
        name for (name,) in _catalog_rows(cur, f"SELECT table_name FROM {space}.{_INLINED_REGISTRY}")
    }
    if not registered <= names:
        return None
    if not owners:
        return []
    holding = _catalog_rows(
        cur,
        " UNION ".join(
            f"SELECT {table_id} WHERE EXISTS (SELECT 1 FROM {space}.{quote_name(name)})"
            for name, table_id in sorted(owners.items())
        ),
    )
    if not holding:
        return []
    ids = ", ".join(str(int(table_id)) for (table_id,) in holding)
    return sorted(
        _catalog_rows(
            cur,
            f"SELECT s.schema_name, t.table_name FROM {space}.ducklake_table t "
            f"JOIN {space}.ducklake_schema s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL "
            f"WHERE t.end_snapshot IS NULL AND t.table_id IN ({ids})",
        )
    )


def whole_lake_flush(lake: str) -> str:
    """DuckLake's flush of every table's inlined rows (it visits each table, with rows or not)."""
    return f"SELECT rows_flushed FROM ducklake_flush_inlined_data('{lake}')"


def flush_statements(cur: duckdb.DuckDBPyConnection, lake: str) -> list[tuple[str, str]]:
    """(step name, SQL) of the upkeep's flush: one per table holding inlined rows or deletions, or one
    over the whole lake when those cannot be told (``tables_with_inlined_rows``)."""
    try:
        targets = tables_with_inlined_rows(cur)
    except duckdb.Error as exc:
        log.warning(
            "lake upkeep: cannot tell which tables hold inlined rows, flushing every table error=%s", exc
        )
        _roll_back(cur)
        targets = None
    if targets is None:
        return [("flush_inlined_data", whole_lake_flush(lake))]
    return [
        (
            f"flush_inlined_data {schema}.{table}",
            f"SELECT rows_flushed FROM ducklake_flush_inlined_data('{lake}', "
            f"schema_name => {string_literal(schema)}, table_name => {string_literal(table)})",
        )
        for schema, table in targets
    ]


def _conflict(exc: duckdb.Error) -> bool:
    """Whether ``exc`` says the step lost a race with another transaction (it is left to the next pass).

    DuckLake says "conflict"; PostgreSQL, under the catalog's repeatable-read transactions, says "could
    not serialize access due to concurrent update" (e.g. the flush's DELETE of inlined rows that a
    commit or a retention DELETE changed meanwhile), which DuckLake passes on as a plain ``Error``, or,
    when DuckLake retried within the transaction that failed so, "Current transaction is aborted".
    """
    text = str(exc).lower()
    return any(
        says in text for says in ("conflict", "could not serialize access", "current transaction is aborted")
    )


def _roll_back(cur: duckdb.DuckDBPyConnection) -> None:
    """End the transaction a failed step left aborted, so that the next step does not fail with "Current
    transaction is aborted (please ROLLBACK)" (a flush that lost to a commit left the catalog's
    PostgreSQL transaction so)."""
    try:
        cur.execute("ROLLBACK")
    except duckdb.Error:  # no transaction left open: nothing to end
        pass


def run_step(
    cur: duckdb.DuckDBPyConnection,
    name: str,
    sql: str,
    conflicts: list[str],
    step_s: dict[str, float] | None = None,
) -> list[tuple]:
    """One step's rows; a step that lost a race (``_conflict``) is logged, named in ``conflicts`` and gives
    no rows, its transaction ended so that the next step runs; any other error is raised. Its wall seconds
    are added to ``step_s`` under the name's first word (``flush_inlined_data main.t``: one table's flush)."""
    started = time.monotonic()
    try:
        return cur.execute(sql).fetchall()
    except duckdb.Error as exc:
        if not _conflict(exc):
            raise
        log.warning("lake upkeep step conflicted with a commit, next pass step=%s error=%s", name, exc)
        conflicts.append(name)
        _roll_back(cur)
        return []
    finally:
        if step_s is not None:
            key = name.split()[0]
            step_s[key] = step_s.get(key, 0.0) + time.monotonic() - started


def upkeep(
    cur: duckdb.DuckDBPyConnection,
    lake: str,
    snapshot_keep_s: float,
    file_keep_s: float,
) -> UpkeepResult:
    """One upkeep pass over the lake attached as ``lake`` on ``cur`` (blocking; a reader cursor does); a step
    that fails is named in the result's ``errors`` and the next one runs."""
    started = time.monotonic()
    out = UpkeepResult(files_before=live_files(cur), snapshots_before=snapshots(cur))

    def step(name: str, sql: str) -> list[tuple]:
        try:
            return run_step(cur, name, sql, out.conflicts, out.step_s)
        except duckdb.Error as exc:
            log.error("lake upkeep step failed, the pass goes on step=%s error=%s", name, exc)
            out.errors.append(f"{name}: {exc}")
            _roll_back(cur)
            return []

    looked = time.monotonic()
    statements = flush_statements(cur, lake)
    out.step_s["flush_inlined_data"] = time.monotonic() - looked
    rows = []
    for name, sql in statements:  # each its own transaction: one that loses a race leaves the others done
        rows += step(name, sql)
    out.inlined_rows_flushed = sum(int(r[0] or 0) for r in rows)
    rows = step(
        "merge_adjacent_files",
        f"SELECT files_processed, files_created FROM ducklake_merge_adjacent_files('{lake}')",
    )
    out.files_merged = sum(int(r[0] or 0) for r in rows)
    out.files_created = sum(int(r[1] or 0) for r in rows)
    rows = step(
        "expire_snapshots",
        f"SELECT count(*) FROM ducklake_expire_snapshots('{lake}', "
        f"older_than => now() - {interval_sql(snapshot_keep_s)})",
    )
    out.snapshots_expired = int(rows[0][0]) if rows else 0
    rows = step(
        "cleanup_old_files",
        f"SELECT count(*) FROM ducklake_cleanup_old_files('{lake}', "
        f"older_than => now() - {interval_sql(file_keep_s)})",
    )
    out.files_deleted = int(rows[0][0]) if rows else 0
    rows = step(
        "count_orphaned_files",
        f"SELECT count(*) FROM ducklake_delete_orphaned_files('{lake}', dry_run => true, "
        f"older_than => now() - {interval_sql(ORPHAN_AGE_S)})",
    )
    out.orphans_found = int(rows[0][0]) if rows else 0
    out.files_after, out.snapshots_after = live_files(cur), snapshots(cur)
    out.seconds = time.monotonic() - started
    return out
