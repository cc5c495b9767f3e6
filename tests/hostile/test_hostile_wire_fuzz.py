"""Property-based wire fuzzing of the collector's ingest: mutated Arrow payloads and hostile message fields.

In process, against the real checks (IngestService._admit) and a real DuckDB store: every input is
either admitted and then commits, or refused with a named reason (a refusal counter other than the
catch-all for checks that broke), never an exception. Over the wire, against a real collector on
loopback: every hostile batch is acked (committed or refused by name), the stream goes on, and the
valid batch sent after it on the same stream commits.
"""

from __future__ import annotations

import itertools
import struct
from collections import Counter
from datetime import timedelta

import grpc
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from testkit.payloads import (
    batch,
    declared_length_bomb,
    duplicate_column_heartbeat,
    encode_compressed,
    good,
    heartbeat_rows,
    heartbeat_with_ts_us,
    invalid_utf8_heartbeat,
    utcnow,
)
from testkit.procs import CollectorProc

from c4.arrow_ipc import encode_ipc
from c4.catalogue import load
from c4.collector.ingest import IngestService, Metrics
from c4.collector.store import PendingBatch, Store
from c4.collector.validate import Refusal
from c4.config import CollectorConfig
from c4.query import query_arrow
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc
from c4.wire_limits import MAX_SEQ

CATALOGUE = load()
#: The codes a refusal may carry; each names its reason in the message and a refused_* counter.
REFUSAL_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}
GOOD_AGENT = "fuzz-good"


def _bases() -> list[bytes]:
    """Valid and hostile payloads that mutations start from."""
    now = utcnow()
    rows = heartbeat_rows("fuzz", range(1, 30), now)
    gpu = CATALOGUE["gpu_samples"]
    gpu_rows = pa.Table.from_pylist(
        [
            {c: None for c in gpu.column_names} | {"ts": now, "node": "fuzz", "job": "", "gpu_index": i}
            for i in range(4)
        ],
        schema=gpu.arrow_schema,
    )
    reordered = rows.select(list(reversed(rows.column_names)))
    dictionary = rows.set_column(1, "node", rows.column("node").dictionary_encode())
    return [
        encode_ipc(rows),
        encode_ipc(pa.concat_tables([rows, rows]).combine_chunks().to_batches(max_chunksize=10)[0]),
        encode_ipc(pa.Table.from_batches(rows.to_batches(max_chunksize=7))),  # several record batches
        encode_compressed(rows, "zstd"),
        encode_compressed(rows, "lz4"),
        encode_ipc(reordered),  # columns in another order: cast to the catalogue's
        encode_ipc(dictionary),  # a dictionary message: the general reader
        encode_ipc(gpu_rows),  # another table's schema
        encode_ipc(heartbeat_rows("fuzz", range(1, 3), now + timedelta(days=3))),  # clamped
        duplicate_column_heartbeat("fuzz"),
        invalid_utf8_heartbeat("fuzz"),
        heartbeat_with_ts_us("fuzz", 2**63 - 1),
        declared_length_bomb(1 << 40),
        encode_compressed(heartbeat_rows("fuzz", range(1, 2000))),
    ]


BASES = _bases()


@st.composite
def payloads(draw) -> bytes:
    """A base payload, mutated: truncated, bits flipped, int64s overwritten (declared lengths), spliced."""
    data = bytearray(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "int64", "splice", "none"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[pos:]
        elif kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "int64" and pos + 8 <= len(data):
            value = draw(st.sampled_from([-1, -2, 2**31, 2**32 - 1, 2**40, 2**62, 2**63 - 1, -(2**63)]))
            struct.pack_into("<q", data, pos, value)
        elif kind == "splice":
            data[pos:pos] = draw(st.sampled_from(BASES))[: draw(st.integers(0, 400))]
    return bytes(data)


def mostly(valid: st.SearchStrategy, hostile: st.SearchStrategy) -> st.SearchStrategy:
    """Valid nine times in ten, so that a batch often gets past its header to its payload."""
    return st.integers(0, 9).flatmap(lambda i: hostile if i == 0 else valid)


agent_ids = mostly(
    st.sampled_from(["fuzz-a", "gpu-node-017.example.internal"])
    | st.from_regex(r"[A-Za-z0-9._:@-]{1,40}", fullmatch=True),
    st.sampled_from(["", "x" * 129, "nul\x00id", "a b", "x" * 5000, "ünï"]) | st.text(max_size=40),
)
seqs = mostly(
    st.integers(1, MAX_SEQ), st.sampled_from([0, MAX_SEQ + 1, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1)
)
tables = mostly(
    st.just("agent_heartbeat"), st.sampled_from(["gpu_samples", "faults", "nope", ""]) | st.text(max_size=30)
)
versions = mostly(st.just(1), st.sampled_from([0, 2]) | st.integers(0, 2**32 - 1))


@st.composite
def hostile_batches(draw) -> pb.Batch:
    """A Batch whose payload and fields are each valid or hostile."""
    return pb.Batch(
        agent_id=draw(agent_ids),
        seq=draw(seqs),
        table=draw(tables),
        schema_version=draw(versions),
        arrow_ipc=draw(payloads()),
    )


def assert_named(outcome) -> None:
    """A refusal with an expected code, a bounded printable message and its own reason."""
    assert isinstance(outcome, Refusal), outcome
    assert outcome.code in REFUSAL_CODES, (outcome.code, outcome.message)
    assert outcome.message and outcome.message.isprintable() and len(outcome.message) <= 1100
    assert outcome.counter.startswith("refused_") and outcome.counter != "refused_check_failed", (
        outcome.message
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("fuzz") / "c4.duckdb", CATALOGUE)
    yield s
    s.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=hostile_batches())
def test_every_input_is_committed_or_refused_by_name_in_process(store, b):
    svc = IngestService(CollectorConfig(max_batch_rows=1000), CATALOGUE, writer=None, metrics=Metrics())
    tally: Counter[str] = Counter()
    outcome = svc._admit("Push", b, None, tally)
    if isinstance(outcome, PendingBatch):
        assert outcome.table.schema.equals(outcome.spec.arrow_schema)
        (result,) = store.commit([outcome])
        assert not result.error, result.error  # whatever is admitted, the store takes
        assert tally["batches_refused"] == 0
    else:
        assert_named(outcome)
        assert tally["batches_refused"] == 1 and tally[outcome.counter] == 1
    event(outcome.counter if isinstance(outcome, Refusal) else "admitted")


@settings(max_examples=300, deadline=None)
@given(b=hostile_batches(), valid=st.sampled_from(BASES[:6]))
def test_a_valid_payload_under_hostile_fields_is_refused_by_name_or_committed(store, b, valid):
    b.arrow_ipc = valid
    outcome = IngestService(CollectorConfig(), CATALOGUE, None, Metrics())._admit("Push", b, None, Counter())
    if isinstance(outcome, PendingBatch):
        (result,) = store.commit([outcome])
        assert not result.error, result.error
    else:
        assert_named(outcome)


# ---- over the wire ----


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz-wire")
    (tmp / "c.toml").write_text("[collector]\nmax_batch_rows = 1000\ndiagnose_interval_s = 0\n")
    col = CollectorProc(tmp, extra=["--config", str(tmp / "c.toml")]).start()
    channel = grpc.insecure_channel(col.address, options=[("grpc.max_send_message_length", 64 << 20)])
    col.stub = pb_grpc.TelemetryStub(channel)
    col.good_seq = itertools.count(1)
    col.good_sent = 0
    yield col
    channel.close()
    col.stop()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(b=hostile_batches(), bundled=st.booleans())
def test_over_the_wire_each_hostile_batch_is_acked_and_the_stream_goes_on(collector, b, bundled):
    assume(b.agent_id != GOOD_AGENT)
    seq = next(collector.good_seq)
    after = good(GOOD_AGENT, seq, [seq])
    if bundled:
        (reply,) = list(collector.stub.PushBundle(iter([pb.BatchBundle(batches=[b, after])]), timeout=60))
        acks = list(reply.acks)
    else:
        acks = list(collector.stub.Push(iter([b, after]), timeout=60))
    assert [a.seq for a in acks] == [b.seq, seq]
    hostile, valid = acks
    if hostile.code:
        assert grpc.StatusCode(_code(hostile.code)) in REFUSAL_CODES, hostile
        assert hostile.message and len(hostile.message) <= 1100
    assert (valid.code, valid.duplicate, valid.rows) == (0, False, 1), valid
    collector.good_sent += 1


def test_after_the_fuzzing_the_collector_serves_and_holds_every_valid_batch(collector):
    acks = list(collector.stub.Push(iter([good("fuzz-last", 1, [1, 2, 3])]), timeout=60))
    assert acks[0].code == 0 and acks[0].rows == 3
    t, _ = query_arrow(collector.address, f"SELECT count(*) FROM agent_heartbeat WHERE node = '{GOOD_AGENT}'")
    assert t.column(0)[0].as_py() == collector.good_sent > 0
    assert collector.p.poll() is None and "Traceback" not in collector.log()


def _code(value: int) -> tuple:
    return next(c.value for c in grpc.StatusCode if c.value[0] == value)


def test_batch_helper_builds_what_it_says():
    b = batch("a", 1, b"x", "t", 3)
    assert (b.agent_id, b.seq, b.table, b.schema_version, b.arrow_ipc) == ("a", 1, "t", 3, b"x")
