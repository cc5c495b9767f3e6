"""The collector's batch decoding: each schema parsed once, and damaged bytes always a clean refusal."""

from __future__ import annotations

from datetime import datetime

import grpc
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from c4.arrow_ipc import (
    CachedSchemaDecoder,
    DecodeLimitError,
    DecodeLimits,
    InvalidColumn,
    decode_ipc,
    encode_ipc,
)
from c4.catalogue import load
from c4.collector.validate import Refusal, validate_batch

CATALOGUE = load()
SPEC = CATALOGUE["agent_heartbeat"]


def heartbeat(node: str, ticks: range) -> pa.Table:
    rows = [{c: None for c in SPEC.column_names} | {"node": node, "tick": t} for t in ticks]
    for r in rows:
        r["ts"] = datetime(2026, 1, 1)
    return pa.Table.from_pylist(rows, schema=SPEC.arrow_schema)


def test_cached_decoder_matches_the_general_reader_and_parses_a_schema_once():
    decoder = CachedSchemaDecoder()
    tables = [heartbeat(f"n{i}", range(i, i + 5)) for i in range(3)]
    multi = pa.concat_tables(tables)  # several record batches in one stream
    keys = set()
    for t in [*tables, multi]:
        payload = encode_ipc(t)
        got, key = decoder.decode(payload)
        assert got.equals(decode_ipc(payload))
        keys.add(key)
    assert len(keys) == 1 and len(decoder._schemas) == 1
    other, key = decoder.decode(encode_ipc(pa.table({"x": [1, 2]})))
    assert other.column("x").to_pylist() == [1, 2] and key not in keys


def test_dictionary_columns_fall_back_to_the_general_reader():
    t = pa.table({"node": pa.array(["a", "b", "a"]).dictionary_encode()})
    got, _ = CachedSchemaDecoder().decode(encode_ipc(t))
    assert got.equals(t)


PAYLOAD = encode_ipc(heartbeat("fuzz", range(1, 40)))


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, len(PAYLOAD) - 1), flips=st.lists(st.integers(0, len(PAYLOAD) - 1), max_size=4))
def test_damaged_payloads_are_refused_or_decoded_never_crash(cut, flips):
    damaged = bytearray(PAYLOAD[:cut] if not flips else PAYLOAD)
    for i in flips:
        if i < len(damaged):
            damaged[i] ^= 0xFF
    try:
        spec, table = validate_batch(CATALOGUE, "agent_heartbeat", SPEC.version, bytes(damaged), 1 << 20)
    except Refusal as refusal:
        # a flip in a declared length may claim more rows or bytes than allowed: refused before decoding
        assert refusal.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
        return
    assert table.schema.equals(spec.arrow_schema)  # a flip in padding may leave a valid batch


@pytest.mark.parametrize("payload", [b"", b"\x00" * 8, b"not arrow at all"])
def test_garbage_is_refused_as_corrupt(payload):
    with pytest.raises(Refusal, match="corrupt Arrow IPC payload"):
        validate_batch(CATALOGUE, "agent_heartbeat", SPEC.version, payload, 1 << 20)


def test_one_batch_payloads_of_a_known_schema_decode_as_the_general_reader_does():
    """The fast path (known schema, one record batch) returns what the general reader does, spans included."""
    fast, general = CachedSchemaDecoder(), CachedSchemaDecoder()
    general._decode_one_batch = lambda payload, limits: None  # every payload through pyarrow's reader
    limits = DecodeLimits(1000, 1 << 20)
    fast.decode_spans(encode_ipc(heartbeat("warm", range(1))), limits)  # the schema is known from here on
    one = encode_ipc(heartbeat("n1", range(7)))
    two = encode_ipc(pa.concat_tables([heartbeat("a", range(2)), heartbeat("b", range(3))]))
    for payload in (one, two, one[:-8], one + b"\xff\xff\xff\xff\x00\x00\x00\x00\x00"):
        try:
            want = general.decode_spans(payload, limits)
        except pa.ArrowInvalid:
            with pytest.raises(pa.ArrowInvalid):
                fast.decode_spans(payload, limits)
            continue
        got = fast.decode_spans(payload, limits)
        assert got[0].equals(want[0]) and got[1] == want[1] and got[2] == want[2]
    assert fast.decode_spans(one, limits)[0].column("node").to_pylist() == ["n1"] * 7
    assert fast._decode_one_batch(one, limits) is not None  # it was the fast path that answered
    assert fast._decode_one_batch(two, limits) is None  # two record batches: the general reader


def test_one_batch_payloads_of_a_known_schema_keep_the_limits_and_the_value_checks():
    """A payload on the fast path is still refused for declaring too many rows or holding bad UTF-8."""
    decoder = CachedSchemaDecoder()
    decoder.decode_spans(encode_ipc(heartbeat("warm", range(1))))
    with pytest.raises(DecodeLimitError) as over:
        decoder.decode_spans(encode_ipc(heartbeat("n", range(50))), DecodeLimits(10, 1 << 20))
    assert over.value.what == "rows" and over.value.declared == 50
    payload = bytearray(encode_ipc(heartbeat("zzzzzz", range(3))))
    at = payload.index(b"zzzzzz")
    payload[at : at + 2] = b"\xc3\x28"  # not UTF-8
    with pytest.raises(InvalidColumn) as bad:
        decoder.decode_spans(bytes(payload), DecodeLimits(10, 1 << 20))
    assert bad.value.column == "node"
