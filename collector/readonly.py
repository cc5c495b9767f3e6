"""Read-only SQL for the Query RPC: the statement check, second line behind the read-only transaction.

The first line is the database itself: a query runs in a ``BEGIN TRANSACTION READ ONLY`` on the
store's file (``Store.reading``), or on a separate DuckDB instance that attached the lake
``READ_ONLY`` (``LakeStore.reading``), so a write that reaches the engine fails there. This module
refuses before execution what that line cannot see: statements that are not one SELECT (an EXPLAIN
of anything but a SELECT, transaction control, SET, CHECKPOINT, ATTACH, LOAD ...), and table
functions that change the database instance rather than its data (``checkpoint()``,
``enable_logging()``, ``postgres_execute()`` ...). Table functions are allowed by name, so one a
new DuckDB or extension adds is refused until it is listed here.
"""

from __future__ import annotations

import functools
import json
import re
import threading

import duckdb

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}

#: Table functions a reader may call: they only read the data or the catalogue.
READ_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "repeat",
        "repeat_row",
        "summary",
        "json_each",
        "json_tree",
        "histogram",
        "histogram_values",
        "icu_calendar_names",
        "pg_timezone_names",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_databases",
        "duckdb_dependencies",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_schemas",
        "duckdb_sequences",
        "duckdb_settings",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
        "duckdb_memory",
        "duckdb_temporary_files",
        "duckdb_extensions",
        "duckdb_optimizers",
        "duckdb_table_sample",
        "duckdb_approx_database_count",
        "pragma_collations",
        "pragma_database_size",
        "pragma_metadata_info",
        "pragma_platform",
        "pragma_show",
        "pragma_storage_info",
        "pragma_table_info",
        "pragma_version",
        "ducklake_snapshots",
        "ducklake_table_info",
        "ducklake_list_files",
        "ducklake_table_insertions",
        "ducklake_table_deletions",
        "ducklake_current_snapshot",
        "ducklake_last_committed_snapshot",
        "ducklake_options",
        "ducklake_settings",
    }
)
#: Scalar functions with an effect beyond the query: a sequence step, a log entry, a stalled worker.
DENIED_SCALAR_FUNCTIONS = frozenset({"nextval", "write_log", "sleep_ms"})

#: Characters of a file path or URL; no table's name holds one (schema.table is parsed apart).
FILE_CHARS = "/\\:."


class QueryRefused(ValueError):
    """The SQL is not a single read-only statement; the message says why."""


#: Longer SQL is refused unparsed (no dashboard query comes near).
MAX_SQL_CHARS = 1 << 20
#: Verdicts on SQL up to this long are remembered: dashboards send the same text again and again.
CACHED_SQL_CHARS = 16 << 10

_parser: duckdb.DuckDBPyConnection | None = None
_parser_lock = threading.Lock()


def _parsing() -> duckdb.DuckDBPyConnection:
    """A cursor of a private in-memory instance that only parses (one per call: thread-safe)."""
    global _parser
    with _parser_lock:
        if _parser is None:  # no file access: parsing IMPORT DATABASE reads the named directory's files
            _parser = duckdb.connect(":memory:", config={"enable_external_access": False})
            _parser.execute("SET lock_configuration = true")
        return _parser.cursor()


def _ast(sql: str) -> dict:
    """DuckDB's own parse tree of one SELECT, as JSON."""
    with _parsing() as cur:
        return json.loads(cur.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()[0])


def _functions(node, tables: set[str], scalars: set[str]) -> None:
    if isinstance(node, dict):
        if node.get("type") == "TABLE_FUNCTION" and isinstance(node.get("function"), dict):
            tables.add(str(node["function"].get("function_name", "")).lower())
        elif node.get("class") == "FUNCTION" and "function_name" in node:
            scalars.add(str(node["function_name"]).lower())
        elif node.get("type") == "BASE_TABLE" and any(c in str(node.get("table_name")) for c in FILE_CHARS):
            # FROM 'path.csv' is a file read in disguise (DuckDB's replacement scan)
            raise QueryRefused(f"read-only: {node.get('table_name')!r} names a file, not a table")
        for value in node.values():
            _functions(value, tables, scalars)
    elif isinstance(node, list):
        for value in node:
            _functions(value, tables, scalars)


def _check_functions(select_sql: str) -> None:
    tree = _ast(select_sql)
    if tree.get("error"):
        raise QueryRefused(f"SQL cannot be checked: {tree.get('error_message', 'unknown error')}")
    tables: set[str] = set()
    scalars: set[str] = set()
    _functions(tree.get("statements", []), tables, scalars)
    scalars -= tables  # a table function's call node is a FUNCTION node too
    refused = sorted(tables - READ_TABLE_FUNCTIONS)
    if refused:
        raise QueryRefused(f"read-only: table function {refused[0]}() is not allowed")
    denied = sorted(scalars & DENIED_SCALAR_FUNCTIONS)
    if denied:
        raise QueryRefused(f"read-only: function {denied[0]}() is not allowed")


def _explained(text: str) -> str:
    """The statement an EXPLAIN wraps, which must be one SELECT; its text."""
    lexed = duckdb.tokenize(text)  # comments are not tokens
    tokens = [pos for pos, _ in lexed]
    ends = [*tokens[1:], len(text)]
    words = [
        text[a] if kind == duckdb.token_type.operator else text[a:b].split()[0].upper()
        for (a, kind), b in zip(lexed, ends, strict=True)
    ]
    i = 1  # past EXPLAIN
    while i < len(words) and words[i] in ("ANALYZE", "ANALYSE", "VERBOSE"):
        i += 1
    starts = [i]
    if i < len(words) and words[i] == "(":  # EXPLAIN (options) stmt, or EXPLAIN (SELECT ...)
        depth = 0
        for j in range(i, len(words)):
            depth += {"(": 1, ")": -1}.get(words[j], 0)
            if depth == 0:
                starts.append(j + 1)
                break
    for start in starts:
        if start >= len(tokens):
            continue
        inner = text[tokens[start] :]
        try:
            statements = _statements(inner)
        except duckdb.Error:
            continue
        if len(statements) == 1 and statements[0].type == duckdb.StatementType.SELECT:
            return inner
        kind = statements[0].type.name if len(statements) == 1 else f"{len(statements)} statements"
        raise QueryRefused(f"read-only: EXPLAIN is allowed of a SELECT only, got EXPLAIN of {kind}")
    raise QueryRefused("read-only: EXPLAIN is allowed of a SELECT only")


def _statements(sql: str) -> list[duckdb.Statement]:
    with _parsing() as cur:
        return cur.extract_statements(sql)


#: Leading whitespace and comments of a statement, then its first keyword.
_FIRST_KEYWORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*([A-Za-z]+)", re.S)
#: Statements refused before DuckDB parses them: parsing IMPORT DATABASE reads the directory's files.
_REFUSED_UNPARSED = frozenset({"IMPORT"})


def first_keyword(sql: str) -> str:
    """The statement's first keyword as the user wrote it, upper-cased (DuckDB's statement kinds name INSTALL
    a LOAD, ANALYZE a VACUUM, CHECKPOINT a CALL); '' when it starts with none."""
    found = _FIRST_KEYWORD.match(sql)
    return found.group(1).upper() if found else ""


def _verdict(sql: str) -> str:
    """Why ``sql`` is refused ('' when it is one read-only statement)."""
    if "\x00" in sql:  # DuckDB reads the text as a C string: it would run only what comes before
        return f"SQL holds a NUL character (at offset {sql.index(chr(0))}): DuckDB would run only the text before it"
    keyword = first_keyword(sql)
    if keyword in _REFUSED_UNPARSED:
        return f"read-only: only SELECT and EXPLAIN are allowed, got {keyword}"
    try:
        statements = _statements(sql)
    except duckdb.Error as exc:
        return f"SQL does not parse: {exc}"
    if len(statements) != 1:
        return f"exactly one statement is allowed, got {len(statements)}"
    statement = statements[0]
    kind = statement.type
    if kind not in ALLOWED:
        return f"read-only: only SELECT and EXPLAIN are allowed, got {keyword or kind.name}"
    try:
        _check_functions(
            statement.query if kind == duckdb.StatementType.SELECT else _explained(statement.query)
        )
    except QueryRefused as exc:
        return str(exc)
    return ""


_cached_verdict = functools.lru_cache(maxsize=4096)(_verdict)


def check_read_only(sql: str) -> duckdb.Statement:
    """The one SELECT/EXPLAIN statement of ``sql`` (execute that, not the text); QueryRefused otherwise.

    File access (read_csv, COPY, ATTACH, INSTALL) is refused by the database as well, which
    runs with external access disabled.
    """
    if not sql.strip():
        raise QueryRefused("empty SQL")
    if len(sql) > MAX_SQL_CHARS:
        raise QueryRefused(f"SQL longer than {MAX_SQL_CHARS} characters")
    refused = _cached_verdict(sql) if len(sql) <= CACHED_SQL_CHARS else _verdict(sql)
    if refused:
        raise QueryRefused(refused)
    return _statements(sql)[0]
