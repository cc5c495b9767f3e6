"""A reader tries every way SQL can write through the Query RPC; the store must not change.

Two lines hold: the read-only transaction (or the lake's read-only instance) refuses any write that
reaches the engine, and the statement check refuses, before execution, whatever the engine would
not see as a write (CHECKPOINT, SET, ATTACH, LOAD, side-effect table functions). Each line is
tested alone, then both together through a real collector.
"""

from __future__ import annotations

import duckdb
import grpc
import pyarrow as pa
import pytest
from testkit.postgres import Postgres
from testkit.procs import CollectorProc
from testkit.wire import heartbeat, hello, stub, token_security

from c4.catalogue import load
from c4.collector.readonly import QueryRefused, check_read_only
from c4.collector.store import SEQ_TABLE, PendingBatch, Store
from c4.query import QueryError, query_arrow

AGENT_TOKEN = "agent-node-a-7f3c9d2e41b8"
READER_TOKEN = "reader-grafana-2b6f8e0a13"
QUIET = "[collector]\nmetrics_interval_s = 3600\ndiagnose_interval_s = 0\nretention_interval_s = 3600\n"

#: Statements that change the database's data or catalogue.
DATA_WRITES = [
    "DELETE FROM agent_heartbeat",
    "DELETE FROM faults",
    "INSERT INTO faults (ts, node, job, fault_id, state) VALUES (now(), 'node-b', '', 'forged', 'open')",
    "INSERT INTO agent_heartbeat SELECT * FROM agent_heartbeat",
    f"UPDATE {SEQ_TABLE} SET last_seq = 9223372036854775808",
    f"INSERT OR REPLACE INTO {SEQ_TABLE} VALUES ('node-a', 9223372036854775808, now())",
    "UPDATE agent_heartbeat SET node = 'forged'",
    "DROP TABLE host_memory",
    "DROP VIEW ib_port_samples_rate",
    "CREATE TABLE evil AS SELECT 1 AS x",
    "CREATE TABLE evil (x INTEGER)",
    "CREATE VIEW evil_v AS SELECT 1 AS x",
    "CREATE SEQUENCE evil_s",
    "CREATE MACRO evil_m(x) AS x",
    "CREATE SCHEMA evil_schema",
    "CREATE INDEX evil_i ON agent_heartbeat (node)",
    "CREATE TYPE evil_ty AS ENUM ('a')",
    "ALTER TABLE host_memory ADD COLUMN evil INTEGER",
    "ALTER TABLE host_memory RENAME TO evil_hm",
    "TRUNCATE agent_heartbeat",
    "COMMENT ON TABLE faults IS 'evil'",
    "MERGE INTO agent_heartbeat USING (SELECT 1 AS x) s ON true WHEN MATCHED THEN DELETE",
]
#: Statements that change the database instance, its files or the session rather than the data.
INSTANCE_WRITES = [
    "CHECKPOINT",
    "FORCE CHECKPOINT",
    "VACUUM",
    "ANALYZE",
    "PRAGMA force_checkpoint",
    "PRAGMA enable_profiling",
    "PRAGMA disable_checkpoint_on_shutdown",
    "CALL checkpoint()",
    "CALL force_checkpoint()",
    "CALL enable_logging()",
    "CALL truncate_duckdb_logs()",
    "SET threads = 1",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "SET memory_limit = '1MB'",
    "RESET memory_limit",
    "SET checkpoint_threshold = '1B'",
    "SET VARIABLE evil = 1",
    "ATTACH ':memory:' AS evil_db",
    "ATTACH '{tmp}/evil.duckdb' AS evil_db2",
    "DETACH evil_db",
    # the side file the collector commits into during checkpoints (c4.collector.side_store)
    "DETACH c4_side",
    "CHECKPOINT c4_side",
    "USE c4_side",
    'DELETE FROM c4_side."agent_heartbeat"',
    "DROP TABLE c4_side._c4_side_generation",
    "INSERT INTO c4_side._c4_side_generation VALUES (0)",
    "USE temp",
    "COPY agent_heartbeat TO '{tmp}/evil.csv'",
    "COPY agent_heartbeat FROM '/etc/hostname'",
    "EXPORT DATABASE '{tmp}/evil-export'",
    "IMPORT DATABASE '{tmp}/evil-export'",
    "INSTALL httpfs",
    "FORCE INSTALL json",
    "LOAD json",
    "LOAD '{tmp}/evil.duckdb_extension'",
    "BEGIN TRANSACTION",
    "COMMIT",
    "ROLLBACK",
    "ABORT",
    "CREATE TEMP TABLE evil_t (x INTEGER)",
    "CREATE SECRET evil (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "DROP SECRET evil",
    "PREPARE evil AS DELETE FROM agent_heartbeat",
    "EXECUTE evil",
    "DEALLOCATE evil",
]
#: SELECT-shaped statements that write or act: DML in a query, side-effect and file functions.
SELECT_WRITES = [
    "WITH d AS (DELETE FROM agent_heartbeat RETURNING *) SELECT * FROM d",
    "SELECT * FROM (DELETE FROM agent_heartbeat RETURNING *)",
    "SELECT * FROM checkpoint()",
    "SELECT * FROM force_checkpoint()",
    "FROM enable_logging()",
    "SELECT * FROM disable_logging()",
    "SELECT * FROM truncate_duckdb_logs()",
    "SELECT * FROM enable_profiling()",
    "SELECT * FROM system.main.checkpoint()",
    'SELECT * FROM "FORCE_CHECKPOINT"()',
    "SELECT (SELECT count(*) FROM force_checkpoint())",
    "SELECT 1 UNION ALL SELECT 1 FROM checkpoint()",
    "SELECT * FROM range(3) WHERE range IN (SELECT 1 FROM force_checkpoint())",
    "SUMMARIZE SELECT * FROM force_checkpoint()",
    "DESCRIBE SELECT * FROM force_checkpoint()",
    "SELECT * FROM query('DELETE FROM agent_heartbeat RETURNING *')",
    "SELECT * FROM query('SELECT * FROM force_checkpoint()')",
    "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT * FROM force_checkpoint()'))",
    "SELECT nextval('evil_s')",
    "SELECT write_log('evil')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM duckdb_secrets()",
    "SELECT * FROM postgres_execute('__ducklake_metadata_lake', 'DROP TABLE ducklake_snapshot')",
    "SELECT * FROM postgres_query('__ducklake_metadata_lake', 'DELETE FROM ducklake_snapshot RETURNING 1')",
    "SELECT * FROM ducklake_expire_snapshots('lake', older_than => now())",
    "SELECT * FROM ducklake_cleanup_old_files('lake', cleanup_all => true)",
    "SELECT * FROM ducklake_merge_adjacent_files('lake')",
    "SELECT * FROM ducklake_set_option('lake', 'data_inlining_row_limit', 1)",
]

#: File reads by a bare path (DuckDB's replacement scan).
FILE_READS = ["SELECT * FROM '/etc/passwd'", "SELECT * FROM '{tmp}/c4.duckdb'"]


def wrapped(statement: str) -> list[str]:
    """The ways one statement can be dressed: EXPLAIN (ANALYZE) in every spelling, a CTE, a batch."""
    return [
        statement,
        f"EXPLAIN ANALYZE {statement}",
        f"EXPLAIN {statement}",
        f"EXPLAIN (ANALYZE) {statement}",
        f"EXPLAIN (ANALYZE, FORMAT json) {statement}",
        f"/* report */ explain analyze\n{statement.lower()}",
        f"WITH c AS (SELECT 1) {statement}",
        f"EXPLAIN ANALYZE WITH c AS (SELECT 1) {statement}",
        f"SELECT 1; {statement}",
        f"COMMIT; {statement}",
    ]


def hostile_forms(tmp) -> list[str]:
    """Every hostile form of every write and file read, with file paths under ``tmp``."""
    forms = []
    for statement in DATA_WRITES + INSTANCE_WRITES + SELECT_WRITES + FILE_READS:
        forms += [f.replace("{tmp}", str(tmp)) for f in wrapped(statement)]
    return list(dict.fromkeys(forms))


#: Read-only SQL a reader must still be able to run.
READS = [
    "SELECT count(*) FROM agent_heartbeat",
    "EXPLAIN SELECT count(*) FROM agent_heartbeat",
    "EXPLAIN ANALYZE SELECT count(*) FROM agent_heartbeat",
    "EXPLAIN (SELECT 1)",
    "WITH c AS (SELECT 1 AS x) SELECT * FROM c",
    "SUMMARIZE agent_heartbeat",
    "DESCRIBE agent_heartbeat",
    "SHOW TABLES",
    "FROM duckdb_tables()",
    "SELECT * FROM range(3)",
    "SELECT * FROM unnest([1, 2])",
    "SELECT * FROM pragma_table_info('faults')",
    "SELECT 'explain analyze delete from faults' AS harmless",
]

STATE_SQL = {
    "tables": "SELECT database_name, schema_name, table_name FROM duckdb_tables() ORDER BY ALL",
    "views": "SELECT database_name, view_name FROM duckdb_views() WHERE NOT internal ORDER BY ALL",
    "sequences": "SELECT database_name, sequence_name FROM duckdb_sequences() ORDER BY ALL",
    "schemas": "SELECT database_name, schema_name FROM duckdb_schemas() ORDER BY ALL",
    "indexes": "SELECT database_name, index_name FROM duckdb_indexes() ORDER BY ALL",
    "databases": "SELECT database_name, readonly FROM duckdb_databases() ORDER BY ALL",
    "macros": "SELECT function_name FROM duckdb_functions() WHERE NOT internal ORDER BY ALL",
    "types": "SELECT type_name FROM duckdb_types() WHERE NOT internal ORDER BY ALL",
    "comments": "SELECT table_name, comment FROM duckdb_tables() WHERE comment IS NOT NULL ORDER BY ALL",
    "settings": "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access', "
    "'lock_configuration', 'enable_logging', 'memory_limit', 'threads', 'checkpoint_threshold', "
    "'access_mode', 'allowed_directories', 'logging_storage') ORDER BY ALL",
}


def counts_sql(seq_table: str = SEQ_TABLE) -> str:
    """Row counts of every catalogue table and of the sequence bookkeeping, in one query."""
    parts = [f"SELECT '{t.name}' AS t, count(*) AS n FROM \"{t.name}\"" for t in load()]
    parts.append(f"SELECT '{seq_table}', count(*) FROM {seq_table}")
    return " UNION ALL ".join(parts) + " ORDER BY 1"


def state_of(run, seq_table: str = SEQ_TABLE) -> dict[str, list]:
    """Everything a write could change, read through ``run(sql) -> list of rows``."""
    state = {name: run(sql) for name, sql in STATE_SQL.items()}
    state["counts"] = run(counts_sql(seq_table))
    state["seq"] = run(f"SELECT agent_id, max(last_seq) FROM {seq_table} GROUP BY 1 ORDER BY 1")
    return state


def rows_of(cur):
    """A runner over a DuckDB cursor."""
    return lambda sql: [tuple(r) for r in cur.execute(sql).fetchall()]


def heartbeat_rows(node: str, ticks: range) -> pa.Table:
    """Heartbeat rows as Arrow, for writing into a store directly."""
    spec = load()["agent_heartbeat"]
    rows = [
        {"ts": None, "node": node, "job": "", "agent_id": node, "boot_ns": 1, "tick": t, "uptime_s": 1.0}
        for t in ticks
    ]
    return pa.Table.from_pylist(rows, schema=spec.arrow_schema)


def fill(store: Store) -> None:
    """A few committed heartbeats and a fault, so deletes have something to delete."""
    catalogue = store.catalogue
    beats = PendingBatch("node-a", 3, catalogue["agent_heartbeat"], heartbeat_rows("node-a", range(1, 4)))
    fault = {c: None for c in catalogue["faults"].column_names} | {"node": "node-a", "fault_id": "f1"}
    faults = pa.Table.from_pylist([fault], schema=catalogue["faults"].arrow_schema)
    results = store.commit([beats, PendingBatch("", 0, catalogue["faults"], faults)])
    assert all(not r.error for r in results), results


def test_the_statement_check_alone_refuses_every_hostile_form(tmp_path):
    """Second line: none of the forms gets past check_read_only, and every read does."""
    for sql in hostile_forms(tmp_path):
        with pytest.raises(QueryRefused):
            check_read_only(sql)
            pytest.fail(f"not refused: {sql}")
    for sql in READS:
        assert check_read_only(sql).query, sql


def _physical(store: Store, tmp_path, seq_table: str = SEQ_TABLE) -> None:
    """First line alone: every data write, in every dress, executed in ``store.reading()``
    without the statement check, fails in DuckDB, and the store is unchanged afterwards."""
    with store.reading() as cur:
        before = state_of(rows_of(cur), seq_table)
    assert before["counts"], "the store is empty: nothing to protect"
    statements = DATA_WRITES + [
        f"SELECT nextval('{s[0]}')" for s in rows_of(store.con)(STATE_SQL["sequences"])
    ]
    forms = [f for s in statements for f in wrapped(s) if not f.startswith(("SELECT 1;", "COMMIT;"))]
    ran = []
    for sql in forms:
        with store.reading() as cur:
            try:
                cur.execute(sql)
                cur.fetchall()
                ran.append(sql)
            except duckdb.Error:
                pass
    # a plain EXPLAIN only plans; anything else that ran is a write that was not refused
    assert [s for s in ran if "analyze" in s.lower() or not s.startswith("EXPLAIN ")] == []
    with store.reading() as cur:
        assert state_of(rows_of(cur), seq_table) == before


def test_the_read_only_transaction_alone_refuses_every_data_write(tmp_path):
    store = Store(tmp_path / "c4.duckdb", load())
    try:
        fill(store)
        store.con.execute("CREATE SEQUENCE probe_seq")  # for nextval()
        _physical(store, tmp_path)
        for sql in READS:  # and reads still work in it
            with store.reading() as cur:
                cur.execute(check_read_only(sql)).fetchall()
    finally:
        store.close()
    con = duckdb.connect(str(tmp_path / "c4.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0] == 3
        assert con.execute("SELECT count(*) FROM faults").fetchone()[0] == 1
        assert con.execute(f"SELECT last_seq FROM {SEQ_TABLE}").fetchall() == [(3,)]
    finally:
        con.close()


@pytest.fixture
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


def test_the_lake_read_only_instance_alone_refuses_every_data_write(tmp_path, postgres):
    from c4.collector.lake import LakeStore

    store = LakeStore(postgres.url, str(tmp_path / "lake-data"), load(), "solo")
    try:
        fill(store)
        _physical(store, tmp_path, store.seq_table)
        with store.reading() as cur:
            before = state_of(rows_of(cur), store.seq_table)
            snapshots = rows_of(cur)("SELECT count(*) FROM ducklake_snapshots('lake')")
        # the lake's maintenance functions and PostgreSQL pass-through, run without the statement
        # check (but ducklake_set_option, which crashes DuckDB 1.5.5 on a read-only lake)
        for sql in SELECT_WRITES:
            if ("ducklake_" in sql or "postgres_" in sql) and "set_option" not in sql:
                with store.reading() as cur:
                    try:
                        cur.execute(sql).fetchall()
                    except duckdb.Error:
                        pass
        with store.reading() as cur:
            assert state_of(rows_of(cur), store.seq_table) == before
            assert rows_of(cur)("SELECT count(*) FROM ducklake_snapshots('lake')") == snapshots
    finally:
        store.close()


def _hostile_run(tmp_path, col: CollectorProc, seq_table: str = SEQ_TABLE) -> None:
    """Fill through an agent token, try every form as a reader, check nothing changed and ingest goes on."""
    agent = stub(col.address, token_security(tmp_path, AGENT_TOKEN))
    reader = token_security(tmp_path, READER_TOKEN)
    assert agent.Hello(hello("node-a"), timeout=10).last_committed_seq == 0
    assert [a.code for a in agent.Push(iter([heartbeat("node-a", s) for s in (1, 2, 3)]), timeout=10)] == [
        0,
        0,
        0,
    ]

    def run(sql: str) -> list[tuple]:
        table, _ = query_arrow(col.address, sql, security=reader)
        return list(zip(*(c.to_pylist() for c in table.columns), strict=True))

    before = state_of(run, seq_table)
    accepted = []
    for sql in hostile_forms(tmp_path):
        try:
            run(sql)
            accepted.append(sql)
        except QueryError as exc:
            assert exc.code in (grpc.StatusCode.INVALID_ARGUMENT,), (sql, exc.code, str(exc))
    assert accepted == []
    for sql in READS:
        run(sql)
    assert state_of(run, seq_table) == before
    assert not any(p.name.startswith("evil") for p in tmp_path.iterdir())
    # the agent's next batch is stored, not taken for a duplicate of a poisoned sequence
    acks = list(agent.Push(iter([heartbeat("node-a", 4)]), timeout=10))
    assert [(a.code, a.duplicate, a.rows) for a in acks] == [(0, False, 1)]
    assert run("SELECT max(tick) FROM agent_heartbeat WHERE node = 'node-a'") == [(4,)]


def _tokens(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"{AGENT_TOKEN} agent node-a\n{READER_TOKEN} reader grafana\n")
    config = tmp_path / "c4.toml"
    config.write_text(QUIET)
    return ["--tokens-file", str(path), "--config", str(config)]


def test_a_reader_cannot_write_through_the_query_rpc(tmp_path):
    col = CollectorProc(tmp_path, extra=_tokens(tmp_path)).start()
    try:
        _hostile_run(tmp_path, col)
    finally:
        assert col.stop() == 0
    con = duckdb.connect(str(col.db), read_only=True)  # the file itself, after a clean stop
    try:
        assert con.execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0] == 4
        assert con.execute(f"SELECT agent_id, last_seq FROM {SEQ_TABLE}").fetchall() == [("node-a", 4)]
        assert {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()} == {
            t.name for t in load()
        } | {SEQ_TABLE}
    finally:
        con.close()


def test_a_reader_cannot_write_through_the_lake_query_rpc(tmp_path, postgres):
    from c4.collector.lake import shard_table

    password = "lake-s3cret-pw"  # the test PostgreSQL trusts loopback: any password will do
    url = postgres.url.replace("postgres://c4@", f"postgres://c4:{password}@")
    col = CollectorProc(
        tmp_path,
        extra=[
            *_tokens(tmp_path),
            "--lake",
            url,
            "--lake-data-path",
            str(tmp_path / "lake-data"),
            "--shard",
            "a",
        ],
    ).start()
    try:
        _hostile_run(tmp_path, col, shard_table("a"))
        reader = token_security(tmp_path, READER_TOKEN)
        for sql in ("SELECT * FROM duckdb_databases()", "SHOW DATABASES", "SELECT * FROM duckdb_settings()"):
            shown = query_arrow(col.address, sql, security=reader)[0].to_pylist()
            assert password not in str(shown), sql  # the lake's credentials are not the readers'
    finally:
        assert col.stop() == 0
