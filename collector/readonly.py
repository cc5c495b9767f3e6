"""Read-only SQL for the Query RPC: one SELECT or EXPLAIN statement, nothing else."""

from __future__ import annotations

import duckdb

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class QueryRefused(ValueError):
    """The SQL is not a single read-only statement; the message says why."""


def check_read_only(sql: str) -> None:
    """Raise QueryRefused unless ``sql`` is exactly one SELECT/EXPLAIN statement.

    File access (read_csv, COPY, ATTACH, INSTALL) is refused by the database itself,
    which runs with external access disabled.
    """
    if not sql.strip():
        raise QueryRefused("empty SQL")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"SQL does not parse: {exc}") from None
    if len(statements) != 1:
        raise QueryRefused(f"exactly one statement is allowed, got {len(statements)}")
    kind = statements[0].type
    if kind not in ALLOWED:
        raise QueryRefused(f"read-only: only SELECT and EXPLAIN are allowed, got a {kind.name} statement")
