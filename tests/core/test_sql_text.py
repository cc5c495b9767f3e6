"""String literals in SQL text: a quote in a value stays part of the value (a path, a job name)."""

import duckdb

from c4.sql_text import quote_name, string_literal


def test_a_string_with_quotes_reads_back_as_itself():
    for text in ("plain", "it's", "''", "a'; DROP TABLE x; --", "/x/it's lake/", ""):
        assert duckdb.sql(f"SELECT {string_literal(text)}").fetchone()[0] == text


def test_a_name_with_quotes_is_one_identifier():
    con = duckdb.connect()
    for name in ("plain", 'a"b', 'x"; DROP TABLE t; --', "with space"):
        con.execute(f"CREATE TABLE {quote_name(name)} (v INTEGER)")
        assert (
            con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()[0]
            == 1
        )
