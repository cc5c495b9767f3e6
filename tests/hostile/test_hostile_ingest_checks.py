"""Hostile batches against the collector's real checks (IngestService._admit), in process.

Each class of bad input found by the hostile probes of issue 15 is refused by name, before it is
decoded where decoding is the danger, and never escapes as an exception.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import timedelta

import grpc
import pyarrow as pa
import pytest
from testkit.payloads import (
    batch,
    bomb_payload,
    declared_length_bomb,
    duplicate_column_heartbeat,
    encode_compressed,
    good,
    heartbeat_rows,
    heartbeat_with_ts_us,
    invalid_utf8_heartbeat,
    utcnow,
)

from c4.arrow_ipc import encode_ipc
from c4.catalogue import load
from c4.collector import validate
from c4.collector.ingest import IngestService, Metrics
from c4.collector.store import PendingBatch
from c4.collector.validate import Refusal
from c4.config import CollectorConfig
from c4.wire_limits import MAX_SEQ, MAX_TS_US

CATALOGUE = load()


def service(**cfg) -> IngestService:
    return IngestService(CollectorConfig(**cfg), CATALOGUE, writer=None, metrics=Metrics())


def admit(svc: IngestService, b) -> tuple[PendingBatch | Refusal, Counter]:
    tally: Counter[str] = Counter()
    return svc._admit("Push", b, None, tally), tally


def refused(outcome, code: grpc.StatusCode, *texts: str) -> None:
    assert isinstance(outcome, Refusal), f"admitted, expected {code.name}"
    assert outcome.code == code, f"{outcome.code.name}: {outcome.message}"
    for text in texts:
        assert text in outcome.message, f"{outcome.message!r} does not say {text!r}"


def test_a_valid_batch_is_admitted():
    outcome, tally = admit(service(), good("n1", 1, range(1, 4)))
    assert isinstance(outcome, PendingBatch) and outcome.table.num_rows == 3
    assert tally["batches_refused"] == 0


# ---- 7: decompression bombs are refused from the message metadata, before decoding ----


def test_compressed_rows_over_the_row_bound_are_refused_by_name():
    payload = encode_compressed(heartbeat_rows("n1", range(1, 101)))
    refused(
        admit(service(max_batch_rows=99), batch("n1", 1, payload))[0],
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "100 rows",
        "max_batch_rows = 99",
    )
    outcome, _ = admit(service(max_batch_rows=100), batch("n1", 1, payload))
    assert isinstance(outcome, PendingBatch) and outcome.table.num_rows == 100


def test_compressed_bytes_over_the_decoded_bound_are_refused_by_name():
    payload = encode_compressed(heartbeat_rows("n1", range(1, 2001)), "lz4")
    outcome, tally = admit(service(max_batch_decoded_bytes=10_000), batch("n1", 1, payload))
    refused(outcome, grpc.StatusCode.RESOURCE_EXHAUSTED, "max_batch_decoded_bytes = 10000")
    assert tally["refused_decoded_size"] == 1
    assert isinstance(admit(service(), batch("n1", 1, payload))[0], PendingBatch)


def test_a_lying_uncompressed_length_is_refused_without_allocating_it():
    outcome, _ = admit(service(), batch("n1", 1, declared_length_bomb(1 << 40)))
    refused(outcome, grpc.StatusCode.RESOURCE_EXHAUSTED, "max_batch_decoded_bytes")
    outcome, _ = admit(service(), batch("n1", 1, declared_length_bomb(-7)))
    refused(outcome, grpc.StatusCode.INVALID_ARGUMENT, "corrupt Arrow IPC")


def test_a_decompression_bomb_never_gets_decoded(tmp_path):
    """2 M rows (72 MB decoded) sent as a few KB: refused while the process's Arrow memory peak stays tiny."""
    payload = bomb_payload(2_000_000)
    assert len(payload) < 200_000
    (tmp_path / "bomb").write_bytes(payload)
    code = textwrap.dedent(
        f"""
        import json, sys
        from collections import Counter
        import pyarrow as pa
        from c4.catalogue import load
        from c4.collector.ingest import IngestService, Metrics
        from c4.config import CollectorConfig
        from c4.telemetry.v1 import telemetry_pb2 as pb
        payload = open({str(tmp_path / "bomb")!r}, "rb").read()
        svc = IngestService(CollectorConfig(), load(), None, Metrics())
        b = pb.Batch(agent_id="bomber", seq=1, table="agent_heartbeat", schema_version=1, arrow_ipc=payload)
        out = svc._admit("Push", b, None, Counter())
        print(json.dumps({{"code": getattr(getattr(out, "code", None), "name", "ADMITTED"),
                          "message": getattr(out, "message", ""),
                          "peak": pa.default_memory_pool().max_memory()}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == "RESOURCE_EXHAUSTED", result
    assert "max_batch_rows" in result["message"]
    assert result["peak"] < 8 << 20, f"Arrow memory peaked at {result['peak']} bytes: the bomb was decoded"


# ---- 10: timestamps no reader can represent are refused, naming the column and the value ----


@pytest.mark.parametrize(
    ("ts_us", "text"),
    [
        (2**63 - 1, "9223372036854775807"),
        (MAX_TS_US + 1, "2262-04-11"),
        (-1, "1969-12-31T23:59:59.999999"),
        (-(2**63), "-9223372036854775808"),
    ],
)
def test_out_of_range_timestamps_are_refused(ts_us, text):
    outcome, tally = admit(service(), batch("n1", 1, heartbeat_with_ts_us("n1", ts_us)))
    refused(outcome, grpc.StatusCode.INVALID_ARGUMENT, "column 'ts'", text)
    assert tally["refused_timestamp"] == 1


def test_every_timestamp_column_is_range_checked_and_nulls_only_where_allowed():
    spec = CATALOGUE["sim_ground_truth"]
    now = utcnow()
    row = {c: None for c in spec.column_names} | {"ts": now, "node": "n1", "job": "", "onset_ts": now}
    ok = pa.Table.from_pylist([row], schema=spec.arrow_schema)  # end_ts NULL: "lasts"
    assert isinstance(
        admit(service(), batch("n1", 1, encode_ipc(ok), spec.name, spec.version))[0], PendingBatch
    )
    i = spec.column_names.index("end_ts")
    bad = ok.set_column(i, "end_ts", pa.array([2**63 - 1], pa.int64()).cast(pa.timestamp("us")))
    refused(
        admit(service(), batch("n1", 1, encode_ipc(bad), spec.name, spec.version))[0],
        grpc.StatusCode.INVALID_ARGUMENT,
        "column 'end_ts'",
    )
    no_ts = ok.set_column(0, "ts", pa.nulls(1, pa.timestamp("us")))
    refused(
        admit(service(), batch("n1", 1, encode_ipc(no_ts), spec.name, spec.version))[0],
        grpc.StatusCode.INVALID_ARGUMENT,
        "time column 'ts'",
        "null",
    )


# ---- 11, 12: content the store would choke on, schemas that broke the checker ----


@pytest.mark.parametrize("column", ["node", "job", "agent_id"])
def test_invalid_utf8_is_refused_naming_the_column(column):
    outcome, tally = admit(service(), batch("n1", 1, invalid_utf8_heartbeat("n1", column)))
    refused(outcome, grpc.StatusCode.INVALID_ARGUMENT, f"column '{column}'", "UTF-8")
    assert tally["refused_invalid_utf8"] == 1


def test_duplicate_column_names_are_refused_by_name():
    outcome, tally = admit(service(), batch("n1", 1, duplicate_column_heartbeat("n1")))
    refused(outcome, grpc.StatusCode.INVALID_ARGUMENT, "duplicate column", "'node'")
    assert tally["refused_columns"] == 1


def test_any_exception_while_checking_a_batch_is_a_refusal(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise KeyError("something nobody foresaw \x00" + "x" * 5000)

    monkeypatch.setattr(validate, "check_payload_of", broken)
    outcome, tally = admit(service(), good("n1", 1, range(1, 2)))
    refused(outcome, grpc.StatusCode.INVALID_ARGUMENT, "could not be checked", "KeyError", "nobody foresaw")
    assert tally["refused_check_failed"] == 1 and tally["batches_refused"] == 1
    assert outcome.message.isprintable() and len(outcome.message) < 1100
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "check_payload" in logged or "broken" in logged  # the traceback, for whoever fixes the check
    assert "\x00" not in logged and "x" * 1200 not in logged


# ---- seq and agent id bounds ----


@pytest.mark.parametrize("seq", [0, MAX_SEQ + 1, 2**63, 2**64 - 1])
def test_sequence_numbers_outside_1_to_max_seq_are_refused(seq):
    outcome, tally = admit(service(), good("n1", seq, range(1, 2)))
    refused(outcome, grpc.StatusCode.INVALID_ARGUMENT, f"seq {seq}", "2^62")
    assert tally["refused_header"] == 1


def test_the_largest_sequence_number_is_admitted():
    assert isinstance(admit(service(), good("n1", MAX_SEQ, range(1, 2)))[0], PendingBatch)


@pytest.mark.parametrize(
    ("agent_id", "text"),
    [
        ("", "agent_id is empty"),
        ("x" * (1 << 20), "1048576 characters long, over 128"),
        ("x" * 129, "129 characters long, over 128"),
        ("bad\x00id", "may hold only the characters"),
        ("two words", "may hold only the characters"),
        ("node/1", "may hold only the characters"),
        ("ünïcode", "may hold only the characters"),
    ],
)
def test_bad_agent_ids_are_refused_naming_the_rule(agent_id, text, caplog):
    b = good("n1", 1, range(1, 2))
    b.agent_id = agent_id
    outcome, _ = admit(service(), b)
    refused(outcome, grpc.StatusCode.INVALID_ARGUMENT, text)
    assert len(outcome.message) < 300
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "\x00" not in logged and "x" * 200 not in logged


@pytest.mark.parametrize(
    "agent_id",
    ["gpu-node-017", "gpu-node-017.cluster.example.internal", "c4-agent-7f9c4:0", "svc_a@host", "x" * 128],
)
def test_real_world_agent_ids_are_admitted(agent_id):
    assert isinstance(admit(service(), good(agent_id, 1, range(1, 2)))[0], PendingBatch)


def test_a_huge_table_name_is_not_echoed_whole():
    b = good("n1", 1, range(1, 2))
    b.table = "t" * 100_000
    outcome, _ = admit(service(), b)
    refused(outcome, grpc.StatusCode.NOT_FOUND, "unknown table")
    assert len(outcome.message) < 300


# ---- 9: rows dated ahead of the collector's clock ----


def test_rows_far_in_the_future_are_clamped_to_the_receive_time_and_counted():
    svc = service(max_clock_skew_s=60)
    now = utcnow()
    rows = pa.concat_tables(
        [heartbeat_rows("n1", [1], now), heartbeat_rows("n1", [2], now + timedelta(days=1))]
    )
    outcome, tally = admit(svc, batch("n1", 1, encode_ipc(rows)))
    assert isinstance(outcome, PendingBatch)
    ts = outcome.table.column("ts").to_pylist()
    assert ts[0] == now  # within the skew: kept as sent
    assert now <= ts[1] <= utcnow()  # a day ahead: the collector's receive time
    assert tally["rows_clamped_future"] == 1
    assert outcome.ipc_parts is None  # the wire bytes no longer hold these rows
    within = heartbeat_rows("n1", [3], now + timedelta(seconds=30))
    outcome, tally = admit(svc, batch("n1", 2, encode_ipc(within)))
    assert outcome.table.column("ts").to_pylist() == [now + timedelta(seconds=30)]
    assert tally["rows_clamped_future"] == 0


def test_a_payload_of_countless_tiny_batches_is_refused_after_a_bounded_number():
    """Each Arrow message costs Python work however small: 5,000 one-row batches are refused by name."""
    rows = heartbeat_rows("n1", range(1, 5001))
    payload = encode_ipc(pa.Table.from_batches(rows.to_batches(max_chunksize=1)))
    outcome, tally = admit(service(), batch("n1", 1, payload))
    refused(outcome, grpc.StatusCode.RESOURCE_EXHAUSTED, "more than 4096 Arrow messages")
    assert tally["refused_decoded_size"] == 1
    few = encode_ipc(pa.Table.from_batches(rows.to_batches(max_chunksize=2)))  # 2,500 messages
    assert isinstance(admit(service(), batch("n1", 1, few))[0], PendingBatch)
