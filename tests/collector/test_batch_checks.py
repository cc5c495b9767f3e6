"""Batches whose values the writer checks many at once (collector/batch_checks.py) fare as when checked alone.

The collector's event loop only frames what agents send; the writer decodes a table's batches of many
agents as one and checks all their rows in one go. Each hostile batch below sits among good batches of
other agents in one writer group: it alone is refused, with the code, counter and words the batch-by-
batch checks give it, and the good batches' rows are stored exactly as the batch-by-batch path stores them.
"""

from __future__ import annotations

import struct
from collections import Counter
from datetime import timedelta

import grpc
import pyarrow as pa
import pytest
from testkit.payloads import (
    batch,
    heartbeat_rows,
    heartbeat_with_ts_us,
    invalid_utf8_heartbeat,
    utcnow,
)

from c4.arrow_ipc import encode_ipc
from c4.bench.load import node_tick, payloads_for
from c4.catalogue import load
from c4.collector.auth import Identity
from c4.collector.batch_checks import commit_checked
from c4.collector.ingest import IngestService, Metrics
from c4.collector.store import PendingBatch, Store
from c4.collector.validate import Refusal
from c4.config import CollectorConfig
from c4.wire_limits import MAX_TS_US, MIN_TS_US

CATALOGUE = load()
AGENT = frozenset({"agent"})


def service(defer: bool, **cfg) -> IngestService:
    svc = IngestService(CollectorConfig(**cfg), CATALOGUE, writer=None, metrics=Metrics())
    svc.defer_checks = defer
    return svc


def admit(svc: IngestService, b, ident=None):
    return svc._admit("PushBundle", b, ident, Counter())


def null_time_heartbeat(node: str) -> bytes:
    rows = heartbeat_rows(node, [1])
    return encode_ipc(rows.set_column(0, "ts", pa.nulls(1, pa.timestamp("us"))))


def nvlink_payload_with_short_list(name: str) -> bytes:
    """An nvlink_gpu_samples payload whose first row's link list is one element short."""
    tick = node_tick_cached()
    table, version, payload, rows = next(p for p in payloads_for(tick, name) if p[0] == "nvlink_gpu_samples")
    data = pa.ipc.open_stream(payload).read_all().combine_chunks()
    links = data.column("link").to_pylist()
    links[0] = links[0][:-1]
    i = data.schema.get_field_index("link")
    return encode_ipc(data.set_column(i, data.schema.field(i), pa.array(links, data.schema.field(i).type)))


_TICK = {}


def node_tick_cached():
    if "tick" not in _TICK:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory(prefix="c4-batch-checks-") as root:  # the tick's rows outlive it
            _TICK["tick"] = node_tick(Path(root))
    return _TICK["tick"]


HOSTILE = {
    "invalid UTF-8": (
        lambda: batch("bad", 1, invalid_utf8_heartbeat("bad", "job")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "refused_invalid_utf8",
    ),
    "time before 1677": (
        lambda: batch("bad", 1, heartbeat_with_ts_us("bad", MIN_TS_US - 1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "refused_timestamp",
    ),
    "time after 2262": (
        lambda: batch("bad", 1, heartbeat_with_ts_us("bad", MAX_TS_US + 1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "refused_timestamp",
    ),
    "NULL time": (
        lambda: batch("bad", 1, null_time_heartbeat("bad")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "refused_timestamp",
    ),
    "list shorter than its key list": (
        lambda: batch("bad", 1, nvlink_payload_with_short_list("bad"), "nvlink_gpu_samples"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "refused_columns",
    ),
}


def good_batches(n: int) -> list:
    """One heartbeat and one NVLink batch of each of n agents (real sampler rows for NVLink)."""
    tick = node_tick_cached()
    out = []
    for i in range(n):
        name = f"good-{i:02d}"
        out.append(batch(name, 1, encode_ipc(heartbeat_rows(name, [i]))))
        nv = next(p for p in payloads_for(tick, name) if p[0] == "nvlink_gpu_samples")
        out.append(batch(name, 2, nv[2], "nvlink_gpu_samples", nv[1]))
    return out


def warm(svc: IngestService, batches) -> None:
    """Check one batch of each schema the batch-by-batch way: later ones of that schema are framed."""
    for b in batches:
        assert isinstance(admit(svc, b), PendingBatch)


def stored(store: Store, table: str) -> list[dict]:
    cols = ", ".join(f'"{c}"' for c in CATALOGUE[table].column_names)
    return store.con.execute(f'SELECT {cols} FROM "{table}" ORDER BY node, ts').to_arrow_table().to_pylist()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_batch_among_good_ones_is_refused_alone_as_when_checked_by_itself(case, tmp_path):
    make, code, counter = HOSTILE[case]
    goods = good_batches(12)
    deferred, alone = service(True), service(False)
    warm(deferred, [good_batches(1)[0], good_batches(1)[1]])
    expected = admit(alone, make())
    assert isinstance(expected, Refusal), "the batch-by-batch checks must refuse it"
    pending = (
        [admit(deferred, b) for b in goods[:12]]
        + [admit(deferred, make())]
        + [admit(deferred, b) for b in goods[12:]]
    )
    assert all(isinstance(p, PendingBatch) for p in pending)
    assert sum(p.unchecked is not None for p in pending) == len(pending), "all framed, none decoded yet"
    store = Store(tmp_path / "c4.duckdb", CATALOGUE, threads=1)
    results = commit_checked(store, pending)
    bad = results[12]
    assert bad.refused and bad.code == code.value[0] and bad.counter == counter
    assert bad.error == expected.message
    assert all(r.rows > 0 and not r.error for i, r in enumerate(results) if i != 12)
    reference = Store(tmp_path / "ref.duckdb", CATALOGUE, threads=1)
    reference.commit([admit(alone, b) for b in goods])
    for table in ("agent_heartbeat", "nvlink_gpu_samples"):
        assert stored(store, table) == stored(reference, table)
        assert "bad" not in {r["node"] for r in stored(store, table)}


def test_rows_of_another_node_are_refused_alone_and_counted_as_a_permission_refusal(tmp_path):
    svc = service(True)
    warm(svc, [batch("warm", 1, encode_ipc(heartbeat_rows("warm", [1])))])
    pending = [
        admit(svc, batch(f"n{i}", 1, encode_ipc(heartbeat_rows(f"n{i}", [1, 2]))), Identity(f"n{i}", AGENT))
        for i in range(8)
    ]
    liar = admit(svc, batch("liar", 1, encode_ipc(heartbeat_rows("victim", [1]))), Identity("liar", AGENT))
    store = Store(tmp_path / "c4.duckdb", CATALOGUE, threads=1)
    results = commit_checked(store, [*pending[:4], liar, *pending[4:]])
    assert results[4].refused and results[4].counter == "refused_other_node"
    assert results[4].code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "may write rows of node 'liar' only" in results[4].error
    assert [r.rows for i, r in enumerate(results) if i != 4] == [2] * 8
    nodes = {r["node"] for r in stored(store, "agent_heartbeat")}
    assert nodes == {f"n{i}" for i in range(8)}


def test_rows_dated_ahead_are_clamped_in_their_own_batch_only_and_reported_for_the_clock(tmp_path):
    svc = service(True, max_clock_skew_s=60)
    warm(svc, [batch("warm", 1, encode_ipc(heartbeat_rows("warm", [1])))])
    now = utcnow()
    ahead = pa.concat_tables(
        [heartbeat_rows("ahead", [1], now), heartbeat_rows("ahead", [2], now + timedelta(days=1))]
    ).combine_chunks()
    before = admit(svc, batch("before", 1, encode_ipc(heartbeat_rows("before", [1, 2], now))))
    late = admit(svc, batch("ahead", 1, encode_ipc(ahead)))
    after = admit(
        svc, batch("after", 1, encode_ipc(heartbeat_rows("after", [5], now + timedelta(seconds=30))))
    )
    assert late.unchecked is not None
    store = Store(tmp_path / "c4.duckdb", CATALOGUE, threads=1)
    results = commit_checked(store, [before, late, after])
    assert [r.rows for r in results] == [2, 2, 1]
    newest, clamped, node = results[1].clock
    assert clamped == 1 and node == "ahead"
    assert newest == int((now + timedelta(days=1) - _EPOCH) / timedelta(microseconds=1))
    assert results[0].clock[1] == 0 and results[2].clock[1] == 0
    rows = {(r["node"], r["tick"]): r["ts"] for r in stored(store, "agent_heartbeat")}
    assert rows[("ahead", 1)] == now and rows[("before", 1)] == now and rows[("before", 2)] == now
    assert now <= rows[("ahead", 2)] <= utcnow()  # a day ahead: set to the receive time
    assert rows[("after", 5)] == now + timedelta(seconds=30)  # within the skew: kept as sent


_EPOCH = utcnow().replace(year=1970, month=1, day=1, hour=0, minute=0, second=0, microsecond=0)


def test_a_corrupt_record_batch_among_good_ones_is_refused_alone(tmp_path):
    """Bytes of one payload's record batch damaged after its framing passed: the joined read fails, the
    batches are checked one by one, the damaged one is refused as corrupt."""
    svc = service(True)
    warm(svc, [batch("warm", 1, encode_ipc(heartbeat_rows("warm", [1])))])
    goods = [admit(svc, batch(f"n{i}", 1, encode_ipc(heartbeat_rows(f"n{i}", [1, 2, 3])))) for i in range(6)]
    payload = bytearray(encode_ipc(heartbeat_rows("broken", [1, 2, 3])))
    broken = admit(svc, batch("broken", 1, bytes(payload)))
    # the node column's offsets (after ts' 24 bytes, the 3 x 8-byte int64s): make them run backwards
    frame = broken.unchecked.frame
    body_end = frame.body_end
    damaged = bytearray(broken.unchecked.payload)
    offsets_at = _offsets_of_node_column(bytes(damaged), frame.schema_end)
    struct.pack_into("<iiii", damaged, offsets_at, 0, 50, 10, 5000)
    broken.unchecked.payload = bytes(damaged)
    assert broken.unchecked.frame.body_end == body_end
    store = Store(tmp_path / "c4.duckdb", CATALOGUE, threads=1)
    results = commit_checked(store, [*goods[:3], broken, *goods[3:]])
    assert results[3].refused and results[3].counter in ("refused_corrupt", "refused_invalid_utf8")
    assert [r.rows for i, r in enumerate(results) if i != 3] == [3] * 6
    assert {r["node"] for r in stored(store, "agent_heartbeat")} == {f"n{i}" for i in range(6)}


def _offsets_of_node_column(payload: bytes, schema_end: int) -> int:
    """Where the ``node`` column's offsets buffer starts in the payload (read from the message's buffers)."""
    message = pa.ipc.read_message(pa.py_buffer(payload).slice(schema_end))
    body_start = schema_end + (message.serialize().size - message.body.size)
    schema = CATALOGUE["agent_heartbeat"].arrow_schema
    # buffers per field: ts (validity, values), node (validity, offsets, data), ...
    assert schema.names[:2] == ["ts", "node"]
    rb = pa.ipc.read_record_batch(message, schema)
    node_offsets = rb.column(1).buffers()[1]
    body = message.body
    return body_start + (node_offsets.address - body.address)


def test_an_agent_refused_once_is_checked_apart_so_the_others_stay_checked_together(tmp_path, monkeypatch):
    """A hostile agent sending rows of another node with every flush: the first group it is in is checked
    one by one (to find it); after that only its own batches are, and it is refused each time the same way."""
    from c4.collector import batch_checks

    alone_calls: list[str] = []
    check_alone = batch_checks._check_alone

    def counting(b):
        alone_calls.append(b.agent_id)
        return check_alone(b)

    monkeypatch.setattr(batch_checks, "_check_alone", counting)
    svc = service(True)
    warm(svc, [batch("warm", 1, encode_ipc(heartbeat_rows("warm", [1])))])

    def group(seq: int) -> list[PendingBatch]:
        goods = [
            admit(
                svc, batch(f"n{i}", seq, encode_ipc(heartbeat_rows(f"n{i}", [seq]))), Identity(f"n{i}", AGENT)
            )
            for i in range(8)
        ]
        liar = admit(
            svc, batch("liar", seq, encode_ipc(heartbeat_rows("victim", [seq]))), Identity("liar", AGENT)
        )
        return [*goods[:4], liar, *goods[4:]]

    def commit_three(suspects) -> list[list[str]]:
        store = Store(tmp_path / f"c4-{suspects is not None}.duckdb", CATALOGUE, threads=1)
        checked_alone = []
        try:
            for seq in (1, 2, 3):
                alone_calls.clear()
                results = commit_checked(store, group(seq), suspects)
                assert results[4].refused and results[4].counter == "refused_other_node"
                assert [r.rows for i, r in enumerate(results) if i != 4] == [1] * 8
                checked_alone.append(sorted(set(alone_calls)))
            assert {r["node"] for r in stored(store, "agent_heartbeat")} == {f"n{i}" for i in range(8)}
            assert len(stored(store, "agent_heartbeat")) == 24
        finally:
            store.close()
        return checked_alone

    everyone = sorted([*(f"n{i}" for i in range(8)), "liar"])
    assert commit_three(None) == [everyone] * 3  # no memory: every group goes one by one
    suspects = batch_checks.Suspects()
    assert commit_three(suspects) == [everyone, ["liar"], ["liar"]]
    assert "liar" in suspects and "n0" not in suspects and len(suspects) == 1


def test_suspects_are_forgotten_after_their_hold_and_kept_to_a_bound():
    from c4.collector.batch_checks import Suspects

    now = [100.0]
    suspects = Suspects(hold_s=60, max_agents=3, clock=lambda: now[0])
    suspects.note("a")
    now[0] += 59
    assert "a" in suspects
    now[0] += 2
    assert "a" not in suspects and len(suspects) == 0
    for name in ("b", "c", "d", "e"):
        suspects.note(name)
    assert len(suspects) == 3 and "b" not in suspects and all(n in suspects for n in "cde")
    suspects.note("c")  # noted again: the newest, so not the next to go
    suspects.note("f")
    assert "d" not in suspects and all(n in suspects for n in "cef")
