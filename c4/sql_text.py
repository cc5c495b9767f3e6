"""SQL text built from values that are not statements: a string becomes a literal, whatever quotes it holds."""

from __future__ import annotations


def string_literal(text: str) -> str:
    """``text`` as a SQL string literal: in single quotes, each quote inside doubled (``it's`` -> ``'it''s'``)."""
    return "'" + text.replace("'", "''") + "'"
