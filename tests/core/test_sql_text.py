"""String literals in SQL text: a quote in a value stays part of the value (a path, a job name)."""

import duckdb

from c4.sql_text import string_literal


def test_a_string_with_quotes_reads_back_as_itself():
    for text in ("plain", "it's", "''", "a'; DROP TABLE x; --", "/x/it's lake/", ""):
        assert duckdb.sql(f"SELECT {string_literal(text)}").fetchone()[0] == text
