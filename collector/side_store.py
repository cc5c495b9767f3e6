"""A second DuckDB file that takes the writer's commits while the store's own file checkpoints.

DuckDB 1.5.5 checkpoints a file table by table, and an INSERT into a table waits while the
checkpoint writes that table (duckdb/duckdb#25988 lifts it in a later release); a commit that
upserts the sequence table waits for the whole checkpoint. Every group commit touches the big
sample tables and the sequence table, so with checkpoints inside the writer (DuckDB's own, at
``checkpoint_threshold``) or beside it, acks stalled for the whole checkpoint: 0.4-2.4 s at
2,000 simulated nodes (``c4 bench load --ticks-per-batch 5``, commit p99 0.7-1.5 s).

A second file has a checkpoint lock of its own. So while the store's file checkpoints (from the
background checkpointer), the writer commits into this side file instead: the same tables, the
same sequence table, each commit as durable as before, acknowledged as before. Once the
checkpoint is over, the writer moves the side file's rows into the store in one transaction that
also stores the sequence numbers, then empties the side file. Until the move, readers of the store
do not see those rows (seconds at most).

Exactly once across a crash: the side file carries a generation number, and the move records that
generation in the store's ``_c4_side_moved`` in the same transaction as the rows. At start, rows left
in the side file are moved unless their generation is recorded as moved already (the crash fell
between the move and the emptying): then they are dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb

from c4.catalogue import Catalogue
from c4.collector.checkpointer import wal_path
from c4.sql_text import string_literal

log = logging.getLogger("c4.collector.side_store")

#: The side file's name when attached to the store's connection.
SIDE_DB = "c4_side"
#: In the side file: its generation (one row), bumped each time it is emptied.
GENERATION_TABLE = "_c4_side_generation"
#: In the store's file: the last side generation whose rows were moved in.
MOVED_TABLE = "_c4_side_moved"
#: The sequence table's name (as in c4.collector.store), in the side file too.
SEQ_NAME = "_c4_agent_seq"
#: The side file's log is folded into it, right after it was emptied, once it is over this size.
SIDE_WAL_CHECKPOINT_BYTES = 64 << 20


def side_path(db_path: Path) -> Path:
    """The side file beside a store's file: ``c4.duckdb`` -> ``c4.duckdb.side``."""
    return db_path.with_name(db_path.name + ".side")


def side_table_ddl(ddl: str, name: str) -> str:
    """A catalogue table's DDL aimed at the side file (same columns, types and constraints)."""
    plain = f'CREATE TABLE IF NOT EXISTS "{name}"'
    if not ddl.startswith(plain):
        raise ValueError(f"unexpected DDL for table {name!r}: {ddl[:80]!r}")
    return f'CREATE TABLE IF NOT EXISTS {SIDE_DB}."{name}"' + ddl[len(plain) :]


def attach(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Attach (creating it if needed) the side file to the store's connection."""
    _remove_if_never_written(path)
    con.execute(f"ATTACH {string_literal(str(path))} AS {SIDE_DB}")


def _remove_if_never_written(path: Path) -> None:
    """A side file of zero bytes with no log beside it holds nothing (a full disk or a kill while DuckDB
    created it) yet DuckDB refuses to open it ever after: it is removed, to be created anew."""
    wal = wal_path(path)
    try:
        if not path.is_file() or path.stat().st_size or (wal.exists() and wal.stat().st_size):
            return
        wal.unlink(missing_ok=True)
        path.unlink()
    except OSError as exc:  # ATTACH then says what is wrong with it
        log.warning("could not remove the empty side file path=%s error=%s", path, exc)
        return
    log.warning("side file was empty (never written); made anew path=%s", path)


def attached(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the side file is attached to the store's connection."""
    row = con.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = ?", [SIDE_DB]).fetchone()
    return bool(row and row[0])


def side_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of the tables in the side file."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY table_name", [SIDE_DB]
    ).fetchall()
    return [r[0] for r in rows]


def generation(con: duckdb.DuckDBPyConnection) -> int:
    """The side file's generation (0 when it has none yet)."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {SIDE_DB}.{GENERATION_TABLE} (gen UBIGINT NOT NULL)")
    row = con.execute(f"SELECT max(gen) FROM {SIDE_DB}.{GENERATION_TABLE}").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def moved_generation(con: duckdb.DuckDBPyConnection) -> int | None:
    """The last side generation the store took in (None: never). Writes nothing (a store that never
    moved any has no such table)."""
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = ?",
        [MOVED_TABLE],
    ).fetchone()
    if not found or not found[0]:
        return None
    row = con.execute(f"SELECT max(gen) FROM {MOVED_TABLE}").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def moved_table_ddl() -> str:
    """The store's table of the last side generation moved in."""
    return f"CREATE TABLE IF NOT EXISTS {MOVED_TABLE} (gen UBIGINT NOT NULL, moved TIMESTAMP NOT NULL)"


def follow(con: duckdb.DuckDBPyConnection, moved: int | None) -> None:
    """Number the (empty) side file's generation after the last one the store took in: a side file
    made anew (removed or lost by the operator) starts at 0, which may be a generation moved already,
    and its rows would then be taken for moved ones and dropped."""
    if moved is not None and generation(con) <= moved:
        con.execute(f"DELETE FROM {SIDE_DB}.{GENERATION_TABLE}")
        con.execute(f"INSERT INTO {SIDE_DB}.{GENERATION_TABLE} VALUES (?)", [moved + 1])


def move_sql(table: str, columns: list[str]) -> str:
    """The statement copying one side table's rows into the store's table, by column name."""
    cols = ", ".join(f'"{c}"' for c in columns)
    return f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM {SIDE_DB}."{table}"'


def side_columns(con: duckdb.DuckDBPyConnection, table: str, database: str = SIDE_DB) -> list[str]:
    """The columns of a side table, in order (its catalogue version may be older than the store's); with
    ``database`` None, of the store's own table (empty when there is no such table)."""
    where = "database_name = current_database()" if database is None else "database_name = ?"
    rows = con.execute(
        f"SELECT column_name FROM duckdb_columns() WHERE {where} AND table_name = ? ORDER BY column_index",
        [table] if database is None else [database, table],
    ).fetchall()
    return [r[0] for r in rows]


def tables_with_rows(con: duckdb.DuckDBPyConnection, names: list[str]) -> list[str]:
    """Which of the side tables hold rows."""
    return [n for n in names if con.execute(f'SELECT 1 FROM {SIDE_DB}."{n}" LIMIT 1').fetchone()]


def reshape(con: duckdb.DuckDBPyConnection, catalogue: Catalogue, seq_ddl: str) -> list[str]:
    """Make the (empty) side tables the catalogue's current shape: create the missing ones, replace
    those of another shape, drop those the catalogue no longer has. Touches nothing when all match
    (a restart on a full disk must not need to write). Returns the tables created."""
    have = set(side_tables(con))
    wanted = {spec.name: spec for spec in catalogue}
    made = []
    for name in sorted(have - set(wanted) - {GENERATION_TABLE, SEQ_NAME}):
        con.execute(f'DROP TABLE {SIDE_DB}."{name}"')
    for name, spec in wanted.items():
        if name in have and side_columns(con, name) == list(spec.column_names):
            continue
        if name in have:
            con.execute(f'DROP TABLE {SIDE_DB}."{name}"')
        con.execute(side_table_ddl(spec.ddl(), name))
        made.append(name)
    if SEQ_NAME not in have:
        con.execute(seq_ddl)
        made.append(SEQ_NAME)
    if GENERATION_TABLE not in have:
        generation(con)
    return made
