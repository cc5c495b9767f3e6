"""Every kind of bad batch is refused by name, counted, and harms no other stream or committed data."""

from __future__ import annotations

import threading
from datetime import datetime

import duckdb
import grpc
import pyarrow as pa
import pytest
from testkit.payloads import heartbeat_rows
from testkit.procs import CollectorProc
from testkit.wait import wait_for

from c4.arrow_ipc import encode_ipc
from c4.query import query_arrow
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

MAX_BATCH = 64 << 10


def heartbeat_table(node: str, ticks: range) -> pa.Table:
    """Heartbeat rows of one node, one per tick (dated 2026-01-01)."""
    return heartbeat_rows(node, ticks, datetime(2026, 1, 1))


def heartbeat_payload(node: str, ticks: range) -> bytes:
    return encode_ipc(heartbeat_table(node, ticks))


def good(node: str, seq: int, ticks: range) -> pb.Batch:
    return pb.Batch(
        agent_id=node,
        seq=seq,
        table="agent_heartbeat",
        schema_version=1,
        arrow_ipc=heartbeat_payload(node, ticks),
    )


def bad_batches(node: str) -> list[tuple[str, pb.Batch, grpc.StatusCode, str]]:
    wrong_cols = pa.table({"ts": pa.array([datetime(2026, 1, 1)], pa.timestamp("us")), "tick": ["x"]})
    big = heartbeat_payload(node, range(1, 1 + 4000))
    assert len(big) > MAX_BATCH
    return [
        (
            "unknown table",
            pb.Batch(
                agent_id=node,
                seq=2,
                table="no_such_table",
                schema_version=1,
                arrow_ipc=heartbeat_payload(node, range(1, 2)),
            ),
            grpc.StatusCode.NOT_FOUND,
            "unknown table 'no_such_table'",
        ),
        (
            "schema version",
            pb.Batch(
                agent_id=node,
                seq=3,
                table="agent_heartbeat",
                schema_version=99,
                arrow_ipc=heartbeat_payload(node, range(1, 2)),
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "schema version 99",
        ),
        (
            "columns",
            pb.Batch(
                agent_id=node,
                seq=4,
                table="agent_heartbeat",
                schema_version=1,
                arrow_ipc=encode_ipc(wrong_cols),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "missing columns",
        ),
        (
            "corrupt",
            pb.Batch(
                agent_id=node,
                seq=5,
                table="agent_heartbeat",
                schema_version=1,
                arrow_ipc=b"\xff\xff\xff\xffnot arrow at all",
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "corrupt Arrow IPC",
        ),
        (
            "oversized",
            pb.Batch(agent_id=node, seq=6, table="agent_heartbeat", schema_version=1, arrow_ipc=big),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "over the limit",
        ),
        (
            "no seq",
            pb.Batch(
                agent_id=node,
                seq=0,
                table="agent_heartbeat",
                schema_version=1,
                arrow_ipc=heartbeat_payload(node, range(1, 2)),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "seq >= 1",
        ),
    ]


@pytest.fixture(scope="module", params=[0, 2], ids=["one-process", "two-ingest-processes"])
def collector(tmp_path_factory, request):
    """A collector in one process, and one whose agents reach two ingest processes (same behaviour)."""
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "c.toml").write_text(
        f"[collector]\nmax_batch_bytes = {MAX_BATCH}\ningest_processes = {request.param}\n"
    )
    col = CollectorProc(tmp, extra=["--config", str(tmp / "c.toml")]).start()
    yield col
    col.stop()


def stats(address: str) -> dict[str, int]:
    with grpc.insecure_channel(address) as ch:
        return dict(pb_grpc.TelemetryStub(ch).Stats(pb.StatsRequest(), timeout=10).counters)


def stats_once(address: str, before: dict[str, int], counter: str, delta: int) -> dict[str, int]:
    """Stats once ``counter`` has grown by ``delta``: ingest processes report their counters to the
    store process with their next group or within a second, so a Stats call may run ahead of them."""
    return wait_for(
        lambda: (s := stats(address)).get(counter, 0) - before.get(counter, 0) >= delta and s,
        timeout_s=10,
        what=f"{counter} to grow by {delta}",
    )


def test_each_bad_batch_is_refused_by_name_while_other_streams_flow(collector):
    address = collector.address
    before = stats(address)
    # a healthy agent streams 200 batches concurrently on its own connection
    healthy_acks: list[pb.Ack] = []

    def healthy() -> None:
        with grpc.insecure_channel(address) as ch:
            reqs = (good("healthy", s, range(s * 10 + 1, s * 10 + 11)) for s in range(1, 201))
            healthy_acks.extend(pb_grpc.TelemetryStub(ch).Push(reqs, timeout=60))

    t = threading.Thread(target=healthy)
    t.start()
    cases = bad_batches("bad-agent")
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 1 << 24)]) as ch:
        stream = (
            [good("bad-agent", 1, range(1, 11))]
            + [c[1] for c in cases]
            + [good("bad-agent", 7, range(11, 21))]
        )
        acks = list(pb_grpc.TelemetryStub(ch).Push(iter(stream), timeout=60))
    t.join()
    # the same stream goes on after each refusal: first and last batches are committed
    assert [a.seq for a in acks] == [b.seq for b in stream]
    assert acks[0].code == 0 and acks[0].rows == 10 and acks[-1].code == 0 and acks[-1].rows == 10
    for (what, _, code, text), ack in zip(cases, acks[1:-1], strict=True):
        assert ack.code == code.value[0], f"{what}: got code {ack.code} ({ack.message})"
        assert text in ack.message, f"{what}: message {ack.message!r} does not say {text!r}"
    assert all(a.code == 0 for a in healthy_acks) and len(healthy_acks) == 200
    t_, _ = query_arrow(
        address, "SELECT node, count(*), count(DISTINCT tick) FROM agent_heartbeat GROUP BY 1 ORDER BY 1"
    )
    counts = {r["node"]: r for r in t_.to_pylist()}
    assert counts["healthy"]["count_star()"] == 2000 and counts["healthy"]["count(DISTINCT tick)"] == 2000
    assert counts["bad-agent"]["count_star()"] == 20
    after = stats_once(address, before, "batches_refused", len(cases))
    for counter in (
        "refused_unknown_table",
        "refused_schema_version",
        "refused_columns",
        "refused_corrupt",
        "refused_oversized",
        "refused_header",
    ):
        assert after.get(counter, 0) - before.get(counter, 0) == 1, counter
    assert after["batches_refused"] - before.get("batches_refused", 0) == len(cases)


def test_resent_committed_sequence_is_acked_as_duplicate(collector):
    with grpc.insecure_channel(collector.address) as ch:
        stub = pb_grpc.TelemetryStub(ch)
        first = list(stub.Push(iter([good("dup", 1, range(1, 6)), good("dup", 2, range(6, 11))]), timeout=30))
        again = list(
            stub.Push(iter([good("dup", 2, range(6, 11)), good("dup", 3, range(11, 16))]), timeout=30)
        )
        reply = stub.Hello(pb.HelloRequest(agent_id="dup", hostname="dup"), timeout=10)
    assert [a.duplicate for a in first] == [False, False]
    assert [(a.duplicate, a.rows) for a in again] == [(True, 0), (False, 5)]
    assert reply.last_committed_seq == 3
    t, _ = query_arrow(
        collector.address, "SELECT count(*), count(DISTINCT tick) FROM agent_heartbeat WHERE node='dup'"
    )
    assert t.to_pylist()[0] == {"count_star()": 15, "count(DISTINCT tick)": 15}


def test_message_over_the_grpc_limit_ends_only_that_stream(collector):
    huge = pb.Batch(
        agent_id="huge",
        seq=1,
        table="agent_heartbeat",
        schema_version=1,
        arrow_ipc=b"x" * (MAX_BATCH * 4 + (2 << 20)),
    )
    with grpc.insecure_channel(collector.address, options=[("grpc.max_send_message_length", 1 << 26)]) as ch:
        with pytest.raises(grpc.RpcError) as err:
            list(pb_grpc.TelemetryStub(ch).Push(iter([huge]), timeout=30))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with grpc.insecure_channel(collector.address) as ch:
        acks = list(pb_grpc.TelemetryStub(ch).Push(iter([good("after-huge", 1, range(1, 4))]), timeout=30))
    assert acks[0].code == 0 and acks[0].rows == 3


@pytest.mark.parametrize(
    ("sql", "code", "text"),
    [
        ("DELETE FROM agent_heartbeat", grpc.StatusCode.INVALID_ARGUMENT, "only SELECT and EXPLAIN"),
        ("CREATE TABLE x (a INT)", grpc.StatusCode.INVALID_ARGUMENT, "only SELECT and EXPLAIN"),
        ("ATTACH '/tmp/other.duckdb'", grpc.StatusCode.INVALID_ARGUMENT, "only SELECT and EXPLAIN"),
        ("INSTALL httpfs", grpc.StatusCode.INVALID_ARGUMENT, "allowed, got INSTALL"),  # DuckDB: a LOAD
        ("BEGIN TRANSACTION", grpc.StatusCode.INVALID_ARGUMENT, "allowed, got BEGIN"),
        ("-- note\n/* c */ ANALYZE", grpc.StatusCode.INVALID_ARGUMENT, "allowed, got ANALYZE"),  # a VACUUM
        # parsing IMPORT reads the directory's schema.sql: refused unparsed, no file touched or shown
        ("IMPORT DATABASE '/etc'", grpc.StatusCode.INVALID_ARGUMENT, "allowed, got IMPORT"),
        ("SET threads = 1", grpc.StatusCode.INVALID_ARGUMENT, "only SELECT and EXPLAIN"),
        ("SELECT 1; DROP TABLE nodes", grpc.StatusCode.INVALID_ARGUMENT, "exactly one statement"),
        ("SELECT * FROM read_csv('/etc/passwd')", grpc.StatusCode.INVALID_ARGUMENT, "not allowed"),
        ("SELECT * FROM read_parquet('/etc/hostname')", grpc.StatusCode.INVALID_ARGUMENT, "not allowed"),
        ("SELEKT 1", grpc.StatusCode.INVALID_ARGUMENT, "does not parse"),
        (
            "SELECT * FROM nodes\x00 WHERE 1 = 0",
            grpc.StatusCode.INVALID_ARGUMENT,
            "NUL character (at offset 19)",
        ),
        ("SELECT * FROM no_such_table", grpc.StatusCode.INVALID_ARGUMENT, "no_such_table"),
    ],
)
def test_query_refuses_writes_files_and_garbage(collector, sql, code, text):
    from c4.query import QueryError

    with pytest.raises(QueryError) as err:
        query_arrow(collector.address, sql)
    assert err.value.code == code and text in str(err.value)


def test_query_row_limit_and_timeout(collector):
    from c4.query import QueryError

    table, truncated = query_arrow(collector.address, "SELECT * FROM range(100000)", max_rows=1234)
    assert table.num_rows == 1234 and truncated
    table, truncated = query_arrow(collector.address, "SELECT * FROM range(10)")
    assert table.num_rows == 10 and not truncated
    empty, _ = query_arrow(collector.address, "SELECT tick FROM agent_heartbeat WHERE false")
    assert empty.num_rows == 0 and empty.column_names == ["tick"]
    with pytest.raises(QueryError) as err:
        query_arrow(collector.address, "SELECT count(*) FROM range(100000000000) a", timeout_s=0.5)
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and "timed out" in str(err.value)
    # the collector still serves afterwards
    assert query_arrow(collector.address, "SELECT 42")[0].column(0)[0].as_py() == 42


def test_bundle_acks_each_batch_in_order_refusing_only_the_bad_ones(collector):
    """PushBundle: the bad batches of a bundle are refused by name, the rest of it is committed."""
    address = collector.address
    before = stats(address)
    cases = bad_batches("bundle-agent")
    bundle = (
        [good("bundle-agent", 1, range(1, 11))]
        + [c[1] for c in cases]
        + [good("bundle-agent", 7, range(11, 21))]
    )
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 1 << 25)]) as ch:
        stub = pb_grpc.TelemetryStub(ch)
        replies = list(
            stub.PushBundle(
                iter(
                    [pb.BatchBundle(batches=bundle), pb.BatchBundle(batches=[good("bundle-agent", 7, [99])])]
                ),
                timeout=60,
            )
        )
    assert len(replies) == 2
    acks = list(replies[0].acks)
    assert [a.seq for a in acks] == [b.seq for b in bundle]
    assert (acks[0].code, acks[0].rows, acks[-1].code, acks[-1].rows) == (0, 10, 0, 10)
    for (what, _, code, text), ack in zip(cases, acks[1:-1], strict=True):
        assert ack.code == code.value[0], f"{what}: got code {ack.code} ({ack.message})"
        assert text in ack.message, f"{what}: message {ack.message!r} does not say {text!r}"
    assert [(a.seq, a.duplicate) for a in replies[1].acks] == [(7, True)]  # already committed
    t, _ = query_arrow(address, "SELECT count(*) FROM agent_heartbeat WHERE node = 'bundle-agent'")
    assert t.to_pylist()[0]["count_star()"] == 20
    after = stats_once(address, before, "bundles_received", 2)
    assert after["bundles_received"] - before.get("bundles_received", 0) == 2
    assert after["batches_refused"] - before.get("batches_refused", 0) == len(cases)


def test_import_database_reads_no_file_on_the_collector_host(collector, tmp_path):
    """Parsing IMPORT DATABASE reads DIR/schema.sql: the gate's parse error quoted the file's first words."""
    from c4.query import QueryError

    secret = tmp_path / "imp"
    secret.mkdir()
    (secret / "schema.sql").write_text("hunter2-SECRET xyz\n")
    (secret / "load.sql").write_text("")
    for sql in (f"IMPORT DATABASE '{secret}'", f"/* x */ import database '{secret}'"):
        with pytest.raises(QueryError) as err:
            query_arrow(collector.address, sql)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "got IMPORT" in str(err.value)
        assert "hunter2" not in str(err.value)
    from c4.collector.readonly import _statements

    with pytest.raises(duckdb.Error, match="disabled by configuration"):  # the parser itself reads no file
        _statements(f"IMPORT DATABASE '{secret}'")
