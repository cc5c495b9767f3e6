"""SQL text built from values that are not statements: a string becomes a literal, a name an identifier,
whatever quotes they hold."""

from __future__ import annotations


def string_literal(text: str) -> str:
    """``text`` as a SQL string literal: in single quotes, each quote inside doubled (``it's`` -> ``'it''s'``)."""
    return "'" + text.replace("'", "''") + "'"


def quote_name(name: str) -> str:
    """A table, column or schema name as a quoted SQL identifier (``a"b`` -> ``"a""b"``)."""
    return '"' + name.replace('"', '""') + '"'
