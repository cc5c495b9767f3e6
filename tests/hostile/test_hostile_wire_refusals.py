"""Hostile batches and Hellos against a real collector on loopback (one process, and with two ingest
processes): each is refused by name on a stream that goes on, nothing of them is stored or logged raw,
and rows dated ahead of the collector's clock are clamped and show up per agent."""

from __future__ import annotations

import functools
import urllib.error
import urllib.request
from datetime import timedelta

import grpc
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families
from testkit.payloads import (
    batch,
    bomb_payload,
    declared_length_bomb,
    duplicate_column_heartbeat,
    good,
    heartbeat_with_ts_us,
    invalid_utf8_heartbeat,
    utcnow,
)
from testkit.procs import CollectorProc
from testkit.wait import wait_for

from c4.query import query_arrow
from c4.sim.procs import free_port
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc
from c4.wire_limits import MAX_SEQ

MB_ID = "x" * (1 << 20)
BIG = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


@functools.cache
def bomb() -> bytes:
    return bomb_payload(2_000_000)


def hostile(agent: str) -> list[tuple[str, pb.Batch, grpc.StatusCode, str]]:
    """(what, batch, expected code, text the refusal must hold), seq 2.. for ``agent``."""
    return [
        ("bomb", batch(agent, 2, bomb()), grpc.StatusCode.RESOURCE_EXHAUSTED, "max_batch_rows"),
        (
            "lying length",
            batch(agent, 3, declared_length_bomb()),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "max_batch_decoded_bytes",
        ),
        (
            "ts int64 max",
            batch(agent, 4, heartbeat_with_ts_us(agent, 2**63 - 1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "column 'ts' holds 9223372036854775807",
        ),
        (
            "invalid utf-8",
            batch(agent, 5, invalid_utf8_heartbeat(agent)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not valid UTF-8",
        ),
        (
            "duplicate columns",
            batch(agent, 6, duplicate_column_heartbeat(agent)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "duplicate column names 'node'",
        ),
        ("seq 2^64-1", good(agent, 2**64 - 1, [99]), grpc.StatusCode.INVALID_ARGUMENT, "at most 2^62"),
        ("seq 2^62+1", good(agent, MAX_SEQ + 1, [99]), grpc.StatusCode.INVALID_ARGUMENT, "at most 2^62"),
        ("1 MB agent id", good(MB_ID, 7, [99]), grpc.StatusCode.INVALID_ARGUMENT, "over 128"),
        (
            "NUL in agent id",
            good("evil\x00agent", 8, [99]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "may hold only the characters",
        ),
    ]


@pytest.fixture(scope="module", params=[0, 2], ids=["one-process", "two-ingest-processes"])
def collector(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("hostile-wire")
    metrics = f"127.0.0.1:{free_port()}"
    (tmp / "c.toml").write_text(
        f'[collector]\ningest_processes = {request.param}\nmetrics_listen = "{metrics}"\n'
        "max_clock_skew_s = 60\nclock_skew_interval_s = 0.5\ndiagnose_interval_s = 0\n"
    )
    col = CollectorProc(tmp, extra=["--config", str(tmp / "c.toml")]).start()
    col.metrics_url = f"http://{metrics}/metrics"
    yield col
    col.stop()


def metrics_text(col: CollectorProc) -> str | None:
    """The collector's /metrics text, None while it is not serving yet (with ingest processes the
    collector answers health checks before its own start has finished)."""
    try:
        with urllib.request.urlopen(col.metrics_url, timeout=10) as resp:
            return resp.read().decode()
    except urllib.error.URLError:
        return None


def varint(n: int) -> bytes:
    """Protobuf's base-128 varint."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def stats(address: str) -> dict[str, int]:
    with grpc.insecure_channel(address) as ch:
        return dict(pb_grpc.TelemetryStub(ch).Stats(pb.StatsRequest(), timeout=10).counters)


def stored_ticks(address: str, node: str) -> list[int]:
    t, _ = query_arrow(address, f"SELECT tick FROM agent_heartbeat WHERE node = '{node}' ORDER BY tick")
    return t.column(0).to_pylist()


def check_acks(acks, cases) -> None:
    for (what, _, code, text), ack in zip(cases, acks, strict=True):
        assert ack.code == code.value[0], f"{what}: got code {ack.code} ({ack.message})"
        assert text in ack.message, f"{what}: {ack.message!r} does not say {text!r}"
        assert len(ack.message) <= 1100 and "\x00" not in ack.agent_id and len(ack.agent_id) <= 128


def assert_nothing_raw_in_log(col: CollectorProc) -> None:
    log = col.log()
    assert "\x00" not in log and "x" * 200 not in log


@pytest.mark.parametrize("rpc", ["Push", "PushBundle"])
def test_hostile_batches_are_refused_by_name_and_the_stream_goes_on(collector, rpc):
    agent = f"hostile-{rpc.lower()}"
    before = stats(collector.address)
    cases = hostile(agent)
    stream = [good(agent, 1, [1, 2]), *(c[1] for c in cases), good(agent, 9, [3, 4])]
    with grpc.insecure_channel(collector.address, options=BIG) as ch:
        stub = pb_grpc.TelemetryStub(ch)
        if rpc == "Push":
            acks = list(stub.Push(iter(stream), timeout=120))
        else:
            (reply,) = list(stub.PushBundle(iter([pb.BatchBundle(batches=stream)]), timeout=120))
            acks = list(reply.acks)
        hello = stub.Hello(pb.HelloRequest(agent_id=agent, hostname=agent), timeout=30)
    assert [a.seq for a in acks] == [b.seq for b in stream]
    assert (acks[0].code, acks[0].rows, acks[-1].code, acks[-1].rows) == (0, 2, 0, 2)
    check_acks(acks[1:-1], cases)
    assert stored_ticks(collector.address, agent) == [1, 2, 3, 4]
    assert hello.last_committed_seq == 9  # no refused seq (2^64-1, 2^62+1) moved the agent's sequence
    after = wait_for(
        lambda: (
            (s := stats(collector.address)).get("batches_refused", 0) - before.get("batches_refused", 0)
            >= len(cases)
            and s
        ),
        timeout_s=15,
        what="the refusals to be counted",
    )
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert grew["batches_refused"] == len(cases)
    assert grew["refused_decoded_size"] == 2 and grew["refused_timestamp"] == 1
    assert grew["refused_invalid_utf8"] == 1 and grew["refused_columns"] == 1 and grew["refused_header"] == 4
    assert_nothing_raw_in_log(collector)


@pytest.mark.parametrize(
    ("hello", "text"),
    [
        (pb.HelloRequest(agent_id=MB_ID, hostname="h"), "agent_id is 1048576 characters long"),
        (pb.HelloRequest(agent_id="a\x00b"), "agent_id 'a\\x00b' may hold only"),
        (pb.HelloRequest(agent_id=""), "agent_id is empty"),
        (pb.HelloRequest(agent_id="ok-1", hostname="bad host"), "hostname 'bad host' may hold only"),
        (pb.HelloRequest(agent_id="ok-2", job="j" * 100_000), "job is 100000 characters long"),
        (pb.HelloRequest(agent_id="ok-3", labels={"rank": "0\n1"}), "label rank"),
        (pb.HelloRequest(agent_id="ok-4", labels={f"k{i}": "v" for i in range(100)}), "100 labels"),
        (pb.HelloRequest(agent_id="ok-5", gpus=[pb.Gpu(name="g\x07")]), "gpus name"),
        (pb.HelloRequest(agent_id="ok-6", nics=[pb.NicPort()] * 5000), "5000 nics"),
    ],
)
def test_hostile_hellos_are_refused_naming_the_rule(collector, hello, text):
    def nodes() -> int:
        return query_arrow(collector.address, "SELECT count(*) FROM nodes")[0].column(0)[0].as_py()

    before = nodes()
    with grpc.insecure_channel(collector.address, options=BIG) as ch:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.TelemetryStub(ch).Hello(hello, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert text in err.value.details() and len(err.value.details()) < 300
    assert nodes() == before  # nothing of it recorded
    assert_nothing_raw_in_log(collector)


def test_rows_from_a_clock_a_day_ahead_are_clamped_and_the_skew_is_visible(collector):
    agent = "skewed-node"
    with grpc.insecure_channel(collector.address) as ch:
        stub = pb_grpc.TelemetryStub(ch)
        sent = utcnow()
        acks = list(stub.Push(iter([good(agent, 1, [1, 2], ts=sent + timedelta(days=1))]), timeout=30))
        assert acks[0].code == 0 and acks[0].rows == 2
        t, _ = query_arrow(collector.address, f"SELECT ts FROM agent_heartbeat WHERE node = '{agent}'")
        stored = t.column(0).to_pylist()
        assert len(stored) == 2 and all(sent <= ts <= utcnow() for ts in stored), stored

        seq = iter(range(2, 10_000))

        def clock_row():
            # agent_clock rows are written once an agent's interval has passed and traffic comes by
            list(stub.Push(iter([good(agent, next(seq), [0], ts=utcnow() + timedelta(days=1))]), timeout=30))
            t, _ = query_arrow(
                collector.address,
                f"SELECT max(skew_s), sum(rows_clamped) FROM agent_clock WHERE agent_id = '{agent}'",
            )
            skew, clamped = t.to_pylist()[0].values()
            return skew is not None and skew > 86_000 and clamped >= 2 and (skew, clamped)

        wait_for(clock_row, timeout_s=30, what="an agent_clock row", poll_s=0.3)

    def exported():
        text = metrics_text(collector)
        if text is None:
            return None
        for fam in text_string_to_metric_families(text):
            if fam.name == "c4_agent_clock_skew_seconds":
                return [s.value for s in fam.samples if s.labels.get("agent_id") == agent]
        return None

    values = wait_for(exported, timeout_s=15, what="c4_agent_clock_skew_seconds")
    assert values[0] > 86_000
    after = stats(collector.address)
    assert after.get("rows_clamped_future", 0) >= 2


def test_row_values_reach_metrics_labels_only_bounded_and_printable(collector):
    """Row columns are not agent ids: a node named with a NUL and 100,000 characters is stored as sent,
    but /metrics shows it printable and cut short."""
    from c4.catalogue import load
    from c4.push import push_table

    spec = load()["host_memory"]
    node = "evil\x00node-" + "y" * 100_000
    row = {c: None for c in spec.column_names} | {
        "ts": utcnow(),
        "node": node,
        "job": "",
        "mem_total_bytes": 7,
    }
    assert push_table(
        collector.address, spec.name, pa.Table.from_pylist([row], schema=spec.arrow_schema), "labels-1"
    )
    wanted = "evil\ufffdnode-" + "y" * 246 + "..."

    def exported():
        text = metrics_text(collector)
        if text is None:
            return None
        assert "\x00" not in text and "y" * 300 not in text
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        return [s.value for s in fams["c4_node_memory_total_bytes"].samples if s.labels["node"] == wanted]

    assert wait_for(exported, timeout_s=15, what="the node's memory gauge") == [7.0]


@pytest.mark.parametrize("rpc", ["Push", "PushBundle"])
def test_a_message_that_does_not_parse_ends_its_stream_by_name_after_acking_what_came_before(collector, rpc):
    """Protobuf strings must be UTF-8: such a message has no batch to ack, so its stream ends with
    INVALID_ARGUMENT (not UNKNOWN and a traceback), after the acks of the batches before it."""
    agent = f"unparsable-{rpc.lower()}"
    first, after = good(agent, 1, [1]), good(agent, 2, [2])
    garbage = b"\x0a\x02\xff\xfe" + good("", 3, [3]).SerializeToString()  # agent_id: bytes ff fe
    if rpc == "Push":
        messages = [first.SerializeToString(), garbage, after.SerializeToString()]
        reply = pb.Ack.FromString
    else:
        bundle = pb.BatchBundle(batches=[first]).SerializeToString()
        messages = [bundle, b"\x0a" + varint(len(garbage)) + garbage, bundle]
        reply = pb.AckBundle.FromString
    got = []
    with grpc.insecure_channel(collector.address) as ch:
        call = ch.stream_stream(
            f"/c4.telemetry.v1.Telemetry/{rpc}", request_serializer=lambda b: b, response_deserializer=reply
        )
        with pytest.raises(grpc.RpcError) as err:
            for r in call(iter(messages), timeout=30):
                got.append(r)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "does not parse" in err.value.details()
        acks = got if rpc == "Push" else [a for r in got for a in r.acks]
        assert [(a.seq, a.code) for a in acks] == [(1, 0)]
        again = list(pb_grpc.TelemetryStub(ch).Push(iter([after]), timeout=30))
    assert (again[0].code, again[0].rows) == (0, 1)
    assert stored_ticks(collector.address, agent) == [1, 2]
    assert "DecodeError" not in collector.log()  # no traceback from gRPC's handler
