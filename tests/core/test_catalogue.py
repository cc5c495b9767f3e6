"""The catalogue is data: DDL, Arrow schemas, rate views and docs all come from it."""

from pathlib import Path

import duckdb
import pytest

from c4.catalogue import Catalogue, CatalogueError, load

REPO = Path(__file__).resolve().parents[2]


def test_docs_are_generated_from_the_catalogue():
    assert (REPO / "docs" / "schema.md").read_text() == load().docs_markdown() + "\n", (
        "docs/schema.md is stale: run `c4 catalogue docs > docs/schema.md`"
    )


def test_every_table_creates_in_duckdb_with_its_rate_view():
    con = duckdb.connect()
    for spec in load():
        con.execute(spec.ddl())
        cols = [r[0] for r in con.execute(f'DESCRIBE "{spec.name}"').fetchall()]
        assert cols == spec.column_names
        if spec.rate_view_ddl():
            con.execute(spec.rate_view_ddl())
            con.execute(f'SELECT * FROM "{spec.name}_rate"').fetchall()


def test_rate_view_handles_reset_and_wrap(tmp_path):
    (tmp_path / "t.toml").write_text(
        """
[tables.ctr]
help = "test"
keys = ["node"]
columns = [
  { name = "plain", type = "UBIGINT", kind = "counter", unit = "bytes", help = "resets" },
  { name = "w32", type = "UBIGINT", kind = "counter", unit = "packets", wrap_bits = 32, help = "wraps" },
]
"""
    )
    spec = Catalogue.from_dir(tmp_path)["ctr"]
    con = duckdb.connect()
    con.execute(spec.ddl())
    con.execute(spec.rate_view_ddl())
    con.execute(
        """INSERT INTO ctr VALUES
        ('2026-01-01 00:00:00', 'n', '', 1000, 4294967000),
        ('2026-01-01 00:00:02', 'n', '', 3000, 4294967200),
        ('2026-01-01 00:00:04', 'n', '', 500, 100),
        ('2026-01-01 00:00:06', 'n', '', 700, 300),
        ('2026-01-01 00:00:08', 'n', '', 900, NULL),
        ('2026-01-01 00:00:10', 'n', '', 1100, 700)"""
    )
    rows = con.execute("SELECT plain_per_s, w32_per_s FROM ctr_rate ORDER BY ts").fetchall()
    assert rows[0] == (None, None)
    assert rows[1] == (1000.0, 100.0)
    # plain went 3000 -> 500: a reset, the 500 counted since; w32 wrapped: 2^32 - 4294967200 + 100 = 196
    assert rows[2] == (250.0, 98.0)
    assert rows[3] == (100.0, 100.0)
    # a counter not read at 00:08 (NULL) has no rate there; at 00:10 it is compared with 00:06 over 4 s
    assert rows[4] == (100.0, None)
    assert rows[5] == (100.0, 100.0)


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            '[tables.x]\nhelp="h"\ncolumns=[{name="a", type="TEXTISH", kind="gauge", help="h"}]',
            "unknown type",
        ),
        ('[tables.x]\nhelp="h"\ncolumns=[{name="a", type="DOUBLE", kind="meter", help="h"}]', "kind 'meter'"),
        ('[tables.x]\nhelp="h"\ncolumns=[{name="a", type="DOUBLE", kind="gauge"}]', "no 'help'"),
        ('[tables.x]\nhelp="h"\nkeys=["zz"]', "key 'zz'"),
        (
            '[tables.x]\nhelp="h"\ncolumns=[{name="ts", type="DOUBLE", kind="gauge", help="h"}]',
            "declared twice",
        ),
    ],
)
def test_malformed_catalogue_is_named(tmp_path, body, text):
    (tmp_path / "bad.toml").write_text(body)
    with pytest.raises(CatalogueError, match=text) as err:
        Catalogue.from_dir(tmp_path)
    assert "bad.toml" in str(err.value) and "'x'" in str(err.value)
