"""The agent's Arrow IPC payloads (written in Python, no pyarrow) decode with pyarrow to exactly the expected table."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from c4.agent.batcher import ColumnBatch, TableBuffer, convert_rows
from c4.arrow_ipc import CachedSchemaDecoder, DecodeLimits, decode_ipc
from c4.catalogue import ColumnSpec, TableSpec, load
from c4.ipc_rows import encode_columns, split_columns

#: Values per catalogue type: the range ends, NULL, non-ASCII text, the epoch and a microsecond.
VALUES = {
    "VARCHAR": ["", "gpu-0", None, "ünïcødé ✓", "x" * 300],
    "BOOLEAN": [True, None, False, True, False],
    "INTEGER": [-(2**31), 2**31 - 1, None, 0, 7],
    "BIGINT": [-(2**63), 2**63 - 1, 0, None, -1],
    "UBIGINT": [0, 2**64 - 1, None, 2**63, 4],
    "DOUBLE": [0.0, -1.5e300, float("inf"), None, 2.0**-1074],
    "TIMESTAMP": [
        datetime(1970, 1, 1),
        datetime(2026, 12, 4, 1, 2, 3, 456789),
        None,
        datetime(1969, 12, 31, 23, 59, 59, 999999),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
    ],
}
#: LIST columns (a wide table's one element per link): two elements each, so every list of a row has
#: as many elements as its key list; NULL items included.
VALUES.update(
    {f"{t}[]": [[v[i], v[(i + 1) % len(v)]] for i in range(len(v))] for t, v in list(VALUES.items())}
)
AGENT_TABLES = [t for t in load() if t.writer == "agent"]


def rows_for(spec: TableSpec, n: int = 5) -> list[dict]:
    """``n`` rows that set every column, each type's values turned around per column."""
    return [
        {c.name: VALUES[c.sql_type][(i + k) % len(VALUES[c.sql_type])] for k, c in enumerate(spec.columns)}
        for i in range(n)
    ]


def test_every_agent_table_is_covered():
    """The catalogue has agent tables, and every type they use has test values."""
    assert len(AGENT_TABLES) > 10
    assert {c.sql_type for t in AGENT_TABLES for c in t.columns} <= set(VALUES)


@pytest.mark.parametrize("spec", AGENT_TABLES, ids=lambda s: s.name)
def test_agent_payload_decodes_to_the_expected_table(spec):
    """Rows -> checked columns -> IPC bytes -> pyarrow: the catalogue's schema, every value equal."""
    rows = rows_for(spec)
    conv = convert_rows(load(), spec.name, rows, {})
    assert conv.dropped == 0, conv.first_error
    [payload] = list(conv.batch.to_ipc(1 << 20))
    got, _ = CachedSchemaDecoder().decode(payload, DecodeLimits(100, 1 << 20))  # the collector's decoder
    got.validate(full=True)
    expected = pa.Table.from_pylist(rows, schema=spec.arrow_schema)
    assert got.schema.equals(spec.arrow_schema)
    assert got.equals(expected), (got.to_pylist(), expected.to_pylist())
    assert conv.table.equals(expected)  # the pyarrow view of the same batch


def test_list_columns_round_trip():
    """LIST columns (one element per link, say): NULL lists, empty lists, NULL items, every item type."""
    lists = {
        "UBIGINT[]": [[0, 2**64 - 1], None, [], [None, 5]],
        "BIGINT[]": [[-(2**63)], [1, None], None, []],
        "INTEGER[]": [[1, 2, 3], [], None, [None]],
        "DOUBLE[]": [[0.5, None], None, [], [1e300]],
        "VARCHAR[]": [["a", "ü"], None, [None, ""], []],
        "BOOLEAN[]": [[True, False, None], [], None, [True]],
    }
    columns = [(f"c{i}", t, v) for i, (t, v) in enumerate(lists.items())]
    columns.append(("ts", "TIMESTAMP", [0, 1, None, 1_733_270_400_000_000]))
    got = decode_ipc(encode_columns(columns, 4))
    got.validate(full=True)
    item = {"UBIGINT": pa.uint64(), "BIGINT": pa.int64(), "INTEGER": pa.int32(), "DOUBLE": pa.float64()}
    item |= {"VARCHAR": pa.string(), "BOOLEAN": pa.bool_()}
    schema = pa.schema(
        [(f"c{i}", pa.list_(item[t[:-2]])) for i, t in enumerate(lists)] + [("ts", pa.timestamp("us"))]
    )
    expected = pa.Table.from_pydict({n: v for n, _, v in columns}, schema=schema)
    assert got.schema.equals(schema) and got.equals(expected)


def test_list_values_are_checked_per_row():
    """A LIST column's rows are checked item by item: a bad item drops its row only."""
    cols = (ColumnSpec("node", "VARCHAR", "", "label", "n"), ColumnSpec("v", "UBIGINT[]", "", "counter", "v"))
    spec = TableSpec("wide", "w", 1, ("node",), cols, "test.toml", writer="agent")

    class Cat(dict):
        def __contains__(self, k):
            return k == "wide"

        def __getitem__(self, k):
            return spec

    conv = convert_rows(
        Cat(), "wide", [{"v": [1, None]}, {"v": [-1]}, {"v": "12"}, {"v": (3,)}], {"node": "n"}
    )
    assert conv.dropped == 2 and "row 1" in conv.first_error and "'v'" in conv.first_error
    assert conv.batch.column("v") == [[1, None], [3]]
    [payload] = list(conv.batch.to_ipc(1 << 20))
    assert decode_ipc(payload).column("v").to_pylist() == [[1, None], [3]]


def test_values_are_checked_as_pyarrow_would():
    """What pyarrow took the agent takes (ints as DOUBLE, whole floats as ints, aware datetimes converted to
    UTC), and what it refused the agent drops with the column named."""
    cat = load()
    ok = {"agent_id": "a", "boot_ns": 2.0, "tick": 1, "uptime_s": 3}
    aware = datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    conv = convert_rows(cat, "agent_heartbeat", [{**ok, "ts": aware}], {"node": "n", "job": ""})
    assert conv.dropped == 0, conv.first_error
    row = conv.table.to_pylist()[0]
    assert row["ts"] == datetime(2026, 1, 1) and row["boot_ns"] == 2 and row["uptime_s"] == 3.0
    bad = [
        {**ok, "tick": True},  # a bool is not a count
        {**ok, "agent_id": "\udcff"},  # not UTF-8
        {**ok, "uptime_s": 2**60},  # no exact DOUBLE
        {**ok, "tick": 2**64},  # over UBIGINT
        {**ok, "ts": datetime(2026, 1, 1).date()},  # a date is not a timestamp
    ]
    conv = convert_rows(
        cat, "agent_heartbeat", [ok, *bad, ok], {"node": "n", "job": "", "ts": datetime.now(UTC)}
    )
    assert conv.dropped == len(bad) and conv.batch.num_rows == 2
    assert "row 1" in conv.first_error and "'tick'" in conv.first_error
    # stricter than pyarrow's from_pylist, which silently truncates 1.5 to 1 in an integer column
    conv = convert_rows(cat, "agent_heartbeat", [{**ok, "boot_ns": 1.5}], {"node": "n", "job": "", "ts": 0})
    assert conv.dropped == 1 and "not a whole number" in conv.first_error
    for r in bad:  # pyarrow refuses each too
        with pytest.raises((pa.ArrowException, TypeError, ValueError, OverflowError)):
            pa.Table.from_pylist(
                [{**r, "node": "n", "job": "", "ts": r.get("ts", datetime.now())}],
                schema=cat["agent_heartbeat"].arrow_schema,
            )


def test_buffer_concatenates_and_splits_by_size():
    """The buffer joins ticks per table; a flush over the size limit splits into payloads that decode to all rows."""
    spec = load()["agent_heartbeat"]
    buf = TableBuffer()
    for t in range(3):
        rows = [{"agent_id": "a", "boot_ns": 1, "tick": t * 100 + i, "uptime_s": 0.5} for i in range(100)]
        buf.add(spec.name, convert_rows(load(), spec.name, rows, {"node": "n", "job": "", "ts": 0}).batch)
    [(name, batch)] = list(buf.drain())
    assert name == spec.name and batch.num_rows == 300 and buf.rows == 0
    payloads = list(batch.to_ipc(4096))
    assert len(payloads) > 1 and all(len(p) <= 4096 for p in payloads)
    ticks = [t for p in payloads for t in decode_ipc(p).column("tick").to_pylist()]
    assert ticks == list(range(300))


def test_split_keeps_a_single_oversized_row():
    """A row bigger than the limit alone still goes out (the collector's limit decides), never lost."""
    [p] = list(split_columns([("s", "VARCHAR", ["x" * 10_000])], 1, 100))
    assert decode_ipc(p).column("s").to_pylist() == ["x" * 10_000]


def test_the_agent_does_not_load_pyarrow():
    """Building and running every sampler module, the batcher and the sender loads no Arrow library (pyarrow,
    nanoarrow), nor polars or numpy."""
    code = (
        "import sys, importlib\n"
        "from c4.agent.registry import SAMPLERS\n"
        "import c4.agent.cli, c4.agent.runner, c4.cli\n"
        "c4.cli.build_parser(c4.cli._command_of(['--log-level', 'INFO', 'agent', '--config', 'x']))\n"
        "for n in ('host', 'heartbeat', 'gpu', 'nic', 'xid_kmsg', 'nccl_inspector', 'nccl_debug_log', 'nccl_conn',"
        " 'nccl_ras'):\n"
        "    importlib.import_module(SAMPLERS[n].split(':')[0])\n"
        "from c4.agent.batcher import convert_rows\n"
        "from c4.catalogue import load\n"
        "c = convert_rows(load(), 'agent_heartbeat', [{'agent_id': 'a', 'boot_ns': 1, 'tick': 1,"
        " 'uptime_s': 1.0}], {'node': 'n', 'job': '', 'ts': 0})\n"
        "assert len(list(c.batch.to_ipc(1 << 20))) == 1\n"
        "print(sorted(m for m in ('pyarrow', 'polars', 'numpy', 'pandas', 'nanoarrow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("spec", list(load().tables.values()), ids=lambda s: s.name)
def test_schema_message_reads_as_the_catalogue_schema(spec):
    """The hand-written flatbuffer of each catalogue table's schema reads, in pyarrow, as the table's schema."""
    import pyarrow.ipc as ipc

    from c4.ipc_rows import EOS, schema_message

    message = schema_message(tuple((c.name, c.sql_type) for c in spec.columns))
    assert len(message) % 8 == 0
    assert ipc.open_stream(message + EOS).schema.equals(spec.arrow_schema)


def test_column_batch_extends():
    """Two batches of one table append column by column."""
    spec = load()["agent_heartbeat"]
    a = ColumnBatch(spec, [[v] for v in (0, "n", "", "a", 1, 1, 0.5)], 1)
    a.extend(ColumnBatch(spec, [[v] for v in (1, "n", "", "a", 1, 2, 0.5)], 1))
    assert a.num_rows == 2 and a.column("tick") == [1, 2]


def test_rows_with_different_columns_take_defaults_and_nulls():
    """Same keys in every row (the transposed path) and different keys (the per-value path) give one result:
    a column a row leaves out takes the default when there is one, else NULL."""
    cat = load()
    same = [{"agent_id": "a", "boot_ns": 1, "tick": t, "uptime_s": 0.5} for t in (1, 2)]
    mixed = [
        {"agent_id": "a", "boot_ns": 1, "tick": 1},
        {"agent_id": "a", "tick": 2, "uptime_s": 0.5, "job": "j"},
    ]
    d = {"node": "n", "ts": 0, "boot_ns": 9}
    got = convert_rows(cat, "agent_heartbeat", same, d).batch
    assert (
        got.column("job") == [None, None]
        and got.column("node") == ["n", "n"]
        and got.column("tick") == [1, 2]
    )
    got = convert_rows(cat, "agent_heartbeat", mixed, d).batch
    assert got.column("uptime_s") == [None, 0.5] and got.column("boot_ns") == [1, 9]
    assert got.column("job") == [None, "j"] and got.column("ts") == [0, 0]
