"""Every DuckDB result type reaches polars, a terminal, CSV, JSON and Parquet: what one cannot take is text.

The Arrow tables come from DuckDB itself (what the collector's Query RPC sends), so the types are the real
producer's: month_day_nano intervals, sparse unions, DuckDB's infinities, BLOB/BIT as binary views.
"""

from __future__ import annotations

import io
import json
import subprocess
from datetime import date, time

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from testkit.procs import C4, CollectorProc

from c4.printable import FORMATS, interval_text, printable_values, unique_names

#: SELECTs whose results polars or a writer refused before (a ComputeError, a Rust panic, a TypeError).
HOSTILE = {
    "interval": "SELECT INTERVAL 1 MONTH + INTERVAL 5 HOUR AS v",
    "date_infinity": "SELECT '-infinity'::DATE AS v, 'infinity'::DATE AS w, DATE '2020-01-01' AS ok",
    "union": "SELECT union_value(k := 1) AS v",
    "timestamp_ns": "SELECT TIMESTAMP_NS '2020-01-01 00:00:00.123456789' AS v, 'infinity'::TIMESTAMP_NS AS w",
    "nested": "SELECT {'a': 1} AS v, [1, 2] AS w, MAP {'k': 1} AS m, [1, 2]::INTEGER[2] AS arr",
    "bytes": "SELECT 'abc\\x01'::BLOB AS v, '101'::BIT AS w",
    "nested_odd": "SELECT [INTERVAL 1 DAY] AS v, {'b': 'x'::BLOB} AS w, [union_value(k := 2)] AS u",
    "tz_infinity": "SELECT '-infinity'::TIMESTAMPTZ AS v",
    # a second hostile round: infinities inside lists and structs (a Rust panic), the end of day (Python's
    # time stops at 23:59:59), twin column names (polars' DuplicateError, an unreadable Parquet file)
    "nested_infinity": "SELECT ['infinity'::DATE] AS v, {'a': '-infinity'::TIMESTAMP} AS w, [DATE '2020-01-01'] AS ok",
    "end_of_day": "SELECT '24:00:00'::TIME AS v, TIME '12:30:00.5' AS w",
    "twin_names": "SELECT 1 AS v, 2 AS v",
}


def duck(sql: str) -> pa.Table:
    """DuckDB's Arrow result of ``sql``, as the collector sends it."""
    con = duckdb.connect()
    try:
        return con.execute(sql).to_arrow_table()
    finally:
        con.close()


def written(table: pa.Table, fmt: str) -> str | bytes:
    """``table`` written as ``c4 sql --format fmt`` writes it."""
    shown = printable_values(table, fmt)
    if fmt == "parquet":
        sink = io.BytesIO()
        pq.write_table(shown, sink)
        return sink.getvalue()
    df = pl.from_arrow(shown)
    assert isinstance(df, pl.DataFrame)
    if fmt == "csv":
        return df.write_csv()
    if fmt == "json":
        return df.write_ndjson()
    with pl.Config(tbl_rows=-1, tbl_cols=-1):
        return str(df)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_every_result_type_is_written_in_every_format(name, fmt):
    table = duck(HOSTILE[name])
    out = written(table, fmt)
    assert out
    if fmt == "parquet":  # it reads back, one row, the same column names
        back = pq.read_table(io.BytesIO(out))
        assert back.num_rows == 1 and back.column_names == unique_names(table.column_names)


def test_the_text_says_what_duckdb_would():
    rows = pl.from_arrow(printable_values(duck(HOSTILE["interval"]))).to_dicts()
    assert rows == [{"v": "1 month 05:00:00"}]
    dates = printable_values(duck(HOSTILE["date_infinity"])).to_pylist()
    assert dates == [{"v": "-infinity", "w": "infinity", "ok": date(2020, 1, 1)}]  # in range: a date
    times = printable_values(duck(HOSTILE["timestamp_ns"]))
    assert times.column("v").type == pa.timestamp("ns")  # in range: left as a time
    assert times.column("w").to_pylist() == ["infinity"]
    assert printable_values(duck(HOSTILE["tz_infinity"])).column("v").to_pylist() == ["-infinity UTC"]
    csv = printable_values(duck(HOSTILE["nested"]), "csv").to_pylist()[0]
    assert (
        json.loads(csv["v"]) == {"a": 1}
        and json.loads(csv["w"]) == [1, 2]
        and json.loads(csv["arr"]) == [1, 2]
    )
    odd = printable_values(duck(HOSTILE["nested_odd"]), "json").to_pylist()[0]
    assert json.loads(odd["v"]) == ["1 day"] and json.loads(odd["w"]) == {"b": "x"}
    assert json.loads(odd["u"]) == [2]
    blob = printable_values(duck(HOSTILE["bytes"]), "csv").to_pylist()[0]
    assert blob["v"] == "abc\\x01"


def test_the_second_round_reads_right():
    nested = printable_values(duck(HOSTILE["nested_infinity"]), "json").to_pylist()[0]
    assert nested["v"] == ["<value out of range: 2147483647>"] and nested["ok"] == ["2020-01-01"]
    assert nested["w"] == {"a": "<value out of range: -9223372036854775807>"}
    end = printable_values(duck(HOSTILE["end_of_day"])).to_pylist()
    assert end == [{"v": "24:00:00", "w": time(12, 30, 0, 500_000)}]  # a column without 24:00 stays a time
    assert printable_values(duck(HOSTILE["twin_names"])).column_names == ["v", "v_1"]


def test_a_table_that_needs_nothing_is_left_as_it_is():
    table = duck("SELECT 1 AS a, 'x' AS b, TIMESTAMP '2020-01-01' AS t, DATE '2020-01-02' AS d")
    shown = printable_values(table, "csv")
    assert shown.schema == table.schema and shown.to_pylist() == table.to_pylist()
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        printable_values(table, "xml")


@pytest.mark.parametrize(
    ("months", "days", "ns", "text"),
    [
        (14, 3, 14_706_500_000_000, "1 year 2 months 3 days 04:05:06.5"),
        (-14, 0, 0, "-1 year -2 months"),
        (0, 0, 0, "00:00:00"),
        (0, 0, -1_500_000_000, "-00:00:01.5"),
        (1, 1, 1, "1 month 1 day 00:00:00.000000001"),
    ],
)
def test_interval_text(months, days, ns, text):
    assert interval_text(months, days, ns) == text


def test_c4_sql_prints_an_interval_a_date_at_infinity_and_nested_csv(tmp_path):
    col = CollectorProc(tmp_path).start()
    try:
        sql = (
            "SELECT INTERVAL 90 MINUTE AS i, '-infinity'::DATE AS d, [1, 2] AS l, "
            "'\\x01'::BLOB AS b, union_value(k := 3) AS u"
        )
        for fmt in ("table", "csv", "json"):
            out = subprocess.run(
                [*C4, "sql", "--collector", col.address, "--format", fmt, sql],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, (fmt, out.stderr)
            assert "01:30:00" in out.stdout and "-infinity" in out.stdout, (fmt, out.stdout)
        parquet = tmp_path / "out.parquet"
        out = subprocess.run(
            [*C4, "sql", "--collector", col.address, "--format", "parquet", "-o", str(parquet), sql],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert pq.read_table(parquet).column("i").to_pylist() == ["01:30:00"]
        full = subprocess.run(  # a full disk is named, not "OSError: [Errno 28]"
            [*C4, "sql", "--collector", col.address, "-o", "/dev/full", sql], capture_output=True, text=True
        )
        assert full.returncode == 1
        assert full.stderr.endswith("c4 sql: cannot write /dev/full: No space left on device\n"), full.stderr
    finally:
        assert col.stop() == 0
