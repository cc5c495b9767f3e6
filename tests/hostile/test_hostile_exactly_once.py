"""Exactly-once when commits fail out of order, when a spool starts over, and across restarts.

Issue 15, defects 1 and 3: an agent sent seq 1 (60,000 rows) and seq 2 (1 row); seq 1 failed to
commit (disk nearly full), seq 2 committed, and the agent's next Hello learned
``last_committed_seq = 2`` and dropped seq 1. And a new spool (sequence starting again at 1) was
swallowed by the old spool's higher watermark.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from datetime import UTC, datetime

import duckdb
import grpc
import pytest
from testkit.payloads import heartbeat_rows as heartbeat_table
from testkit.procs import CollectorProc
from testkit.small_disk import tmpfs
from testkit.wait import wait_for

from c4.agent.client import Sender
from c4.agent.spool import Spool
from c4.arrow_ipc import encode_ipc
from c4.catalogue import load
from c4.collector.ingest import Metrics
from c4.collector.ingest_process import StoreClient
from c4.collector.sequence import new_stream_id
from c4.collector.store import PendingBatch, Store
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc


def scalar(address: str, sql: str):
    from c4.query import query_arrow

    table, _ = query_arrow(address, sql)
    return table.column(0)[0].as_py()


def Stats(address: str) -> dict[str, int]:
    with grpc.insecure_channel(address) as ch:
        return dict(pb_grpc.TelemetryStub(ch).Stats(pb.StatsRequest(), timeout=10).counters)


CATALOGUE = load()
HEARTBEAT = CATALOGUE["agent_heartbeat"]


class DiskNearlyFull(Store):
    """A store whose inserts of more than ``max_rows`` rows fail as a nearly full disk makes them fail."""

    max_rows = 1000

    def _commit_group(self, batches):
        if sum(b.table.num_rows for b in batches if self.book.plan([b])[0][0] is None) > self.max_rows:
            raise duckdb.IOException("could not write the WAL: No space left on device")
        return super()._commit_group(batches)


def batch(agent: str, seq: int, rows: int, stream: int, epoch: int = 0) -> PendingBatch:
    first = seq * 100_000
    return PendingBatch(
        agent,
        seq,
        HEARTBEAT,
        heartbeat_table(agent, range(first, first + rows)),
        stream=stream,
        spool_epoch=epoch,
    )


def stored(store: Store, agent: str) -> int:
    return store.con.execute("SELECT count(*) FROM agent_heartbeat WHERE node = ?", [agent]).fetchone()[0]


def test_a_failed_batch_stops_the_rest_of_its_stream_in_one_group(tmp_path):
    store = DiskNearlyFull(tmp_path / "c4.duckdb", CATALOGUE)
    s = new_stream_id()
    results = store.commit([batch("a", 1, 60_000, s), batch("a", 2, 1, s)])
    assert results[0].error and not results[0].refused
    assert results[1].error and "seq 1" in results[1].error  # not committed after the failed one
    assert store.known_seq("a") == 0 and stored(store, "a") == 0
    # the agent reconnects: Hello says 0, it sends both again on a new stream, and space is back
    store.max_rows = 10**9
    again = new_stream_id()
    results = store.commit([batch("a", 1, 60_000, again), batch("a", 2, 1, again)])
    assert [r.rows for r in results] == [60_000, 1]
    assert store.known_seq("a") == 2 and stored(store, "a") == 60_001
    store.close()


def test_a_failed_batch_stops_the_rest_of_its_stream_across_groups(tmp_path):
    store = DiskNearlyFull(tmp_path / "c4.duckdb", CATALOGUE)
    s, other = new_stream_id(), new_stream_id()
    assert store.commit([batch("a", 1, 60_000, s)])[0].error
    # seq 2 of the same stream comes in the next group (the stream was read ahead): held back
    late = store.commit([batch("a", 2, 1, s), batch("b", 1, 1, other)])
    assert late[0].error and late[1].rows == 1  # another agent's stream is not held back
    assert store.known_seq("a") == 0 and store.known_seq("b") == 1
    store.close()


def test_rows_that_can_never_be_stored_are_refused_for_good_not_retried(tmp_path):
    class BadRows(Store):
        def _commit_group(self, batches):
            if any(b.seq == 1 for b in batches):
                raise duckdb.ConversionException("Could not convert string 'x' to INT64")
            return super()._commit_group(batches)

    store = BadRows(tmp_path / "c4.duckdb", CATALOGUE)
    s = new_stream_id()
    first, second = store.commit([batch("a", 1, 5, s), batch("a", 2, 5, s)])
    assert first.refused and first.error  # final: the agent drops it instead of retrying forever
    assert second.rows == 5 and store.known_seq("a") == 2
    store.close()


def test_a_new_spool_epoch_starts_the_sequence_over_and_survives_a_restart(tmp_path):
    path = tmp_path / "c4.duckdb"
    store = Store(path, CATALOGUE)
    assert store.open_agent("a", 111) == 0
    s = new_stream_id()
    assert [r.rows for r in store.commit([batch("a", n, 2, s, 111) for n in range(1, 6)])] == [2] * 5
    assert store.open_agent("a", 111) == 5  # a reconnect of the same spool
    # the node's spool directory was wiped: a new epoch starts again at 1 and is not a duplicate
    assert store.open_agent("a", 222) == 0
    stale, fresh = store.commit([batch("a", 6, 2, s, 111), batch("a", 1, 3, new_stream_id(), 222)])
    assert stale.error and "epoch" in stale.error  # the old spool's stream commits nothing more
    assert fresh.rows == 3 and not fresh.duplicate
    store.close()
    reopened = Store(path, CATALOGUE)
    assert reopened.book.get("a").epoch == 222 and reopened.open_agent("a", 222) == 1
    assert stored(reopened, "a") == 13
    reopened.close()


def nodes_row(agent: str, epoch: int) -> PendingBatch:
    """The collector's nodes row of a Hello, carrying the agent's spool epoch (as Hello sends it)."""
    row = {
        "ts": datetime.now(UTC).replace(tzinfo=None),
        "node": agent,
        "job": "",
        "agent_id": agent,
        "agent_version": "t",
        "gpu_count": 0,
        "nic_port_count": 0,
        "gpus_json": "[]",
        "nics_json": "[]",
        "labels_json": "{}",
    }
    return PendingBatch.internal(CATALOGUE["nodes"], [row], opens=((agent, epoch),))


class CountingStore(Store):
    """The real store, counting the transactions that write agents' sequence rows."""

    seq_writes = 0

    def _write_seqs(self, *args, **kwargs):
        self.seq_writes += 1
        return super()._write_seqs(*args, **kwargs)


def test_a_hellos_epoch_rides_on_its_nodes_commit_and_answers_as_open_agent_did(tmp_path):
    """Hello records the agent's spool epoch in the commit of its nodes row (with other agents' batches),
    not in a transaction of its own: open_agent then writes nothing and answers as before; a new epoch
    starts the sequence over, the old spool's stream commits nothing more, and a restart keeps it all."""
    path = tmp_path / "c4.duckdb"
    store = CountingStore(path, CATALOGUE)
    s = new_stream_id()
    (hello_a, other) = store.commit([nodes_row("a", 111), batch("b", 1, 2, new_stream_id())])
    assert hello_a.rows == 1 and other.rows == 2 and store.seq_writes == 1  # one transaction for both
    assert store.open_agent("a", 111) == 0 and store.seq_writes == 1  # recorded already: nothing to write
    assert [r.rows for r in store.commit([batch("a", n, 2, s, 111) for n in range(1, 6)])] == [2] * 5
    # a new spool's Hello in the same group as the old spool's last batch: as if it came right after it
    last_old, hello_new = store.commit([batch("a", 6, 2, s, 111), nodes_row("a", 222)])
    assert last_old.rows == 2 and hello_new.rows == 1
    writes = store.seq_writes
    assert store.open_agent("a", 222) == 0 and store.seq_writes == writes
    stale, fresh = store.commit([batch("a", 7, 2, s, 111), batch("a", 1, 3, new_stream_id(), 222)])
    assert stale.error and "epoch" in stale.error and fresh.rows == 3
    store.close()
    reopened = Store(path, CATALOGUE)
    try:
        assert reopened.book.get("a").epoch == 222 and reopened.open_agent("a", 222) == 1
    finally:
        reopened.close()


def test_a_store_written_before_epochs_keeps_its_watermarks(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE _c4_agent_seq (agent_id VARCHAR PRIMARY KEY, last_seq UBIGINT NOT NULL, "
        "updated TIMESTAMP NOT NULL)"
    )
    con.execute("INSERT INTO _c4_agent_seq VALUES ('a', 41, now()::TIMESTAMP)")
    con.close()
    store = Store(path, CATALOGUE)
    # the first epoch an agent declares is adopted: what it committed before stays committed
    assert store.open_agent("a", 7) == 41
    s = new_stream_id()
    assert store.commit([batch("a", 41, 1, s, 7)])[0].duplicate
    assert store.commit([batch("a", 42, 1, s, 7)])[0].rows == 1
    store.close()


async def store_process(store: pb_grpc.IngestServicer, tmp_path) -> tuple[grpc.aio.Server, grpc.aio.Channel]:
    """A stand-in store process serving ``store`` on a private socket, and a channel to it."""
    server = grpc.aio.server()
    pb_grpc.add_IngestServicer_to_server(store, server)
    address = f"unix:{tmp_path}/store.sock"
    server.add_insecure_port(address)
    await server.start()
    return server, grpc.aio.insecure_channel(address)


class SlowFirstStore(pb_grpc.IngestServicer):
    """A store process whose first Commit is slow and then fails: records the groups in arrival order."""

    def __init__(self) -> None:
        self.groups: list[list[tuple[str, int]]] = []
        self.release = asyncio.Event()

    async def Commit(self, group: pb.CommitGroup, context) -> pb.CommitReply:
        entries = [(e.agent_id, e.seq) for e in group.entries]
        if not entries:
            return pb.CommitReply()
        self.groups.append(entries)
        if len(self.groups) == 1:
            await self.release.wait()  # a second group could overtake this one
            await context.abort(grpc.StatusCode.UNAVAILABLE, "store process: disk full")
        return pb.CommitReply(results=[pb.EntryResult(rows=1) for _ in entries])


def test_an_ingest_process_never_sends_a_stream_in_two_groups_at_once_nor_after_a_failure(tmp_path):
    async def run():
        store = SlowFirstStore()
        server, channel = await store_process(store, tmp_path)
        client = StoreClient(channel, Metrics(), linger_s=0)
        s, other = new_stream_id(), new_stream_id()
        try:
            one = client.submit_many_async([batch("a", 1, 1, s)])
            while not store.groups:
                await asyncio.sleep(0.01)
            two = client.submit_many_async([batch("a", 2, 1, s)])
            three = client.submit_many_async([batch("b", 1, 1, other)])
            third = await three  # b's batch overtakes; a's seq 2 waits for the group carrying seq 1
            assert store.groups == [[("a", 1)], [("b", 1)]]
            store.release.set()
            return store.groups, await one, await two, third
        finally:
            await channel.close()
            await server.stop(0)

    groups, one, two, three = asyncio.run(run())
    assert one[0].error and not one[0].refused
    assert two[0].error and "seq 1" in two[0].error  # refused here: never sent after seq 1 failed
    assert three[0].rows == 1
    assert ("a", 2) not in [e for g in groups for e in g]


class SizeRecordingStore(pb_grpc.IngestServicer):
    """A store process that records each CommitGroup's size and commits everything."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.entries = 0

    async def Commit(self, group: pb.CommitGroup, context) -> pb.CommitReply:
        self.sizes.append(group.ByteSize())
        self.entries += len(group.entries)
        return pb.CommitReply(results=[pb.EntryResult(rows=e.rows) for e in group.entries])


def test_an_ingest_process_keeps_each_group_under_its_byte_bound(tmp_path):
    """A backlog of many agents' batches goes as several groups, none over ``max_bytes``: the store
    process refuses a message over its receive limit, which failed every batch of a whole group."""

    async def run():
        store = SizeRecordingStore()
        server, channel = await store_process(store, tmp_path)
        client = StoreClient(channel, Metrics(), max_bytes=64 << 10, linger_s=0.05)
        try:
            submitted = [
                client.submit_many_async([batch(f"a{i}", 1, 200, new_stream_id())]) for i in range(60)
            ]
            results = [r for f in submitted for r in await f]
            return store, results
        finally:
            await channel.close()
            await server.stop(0)

    store, results = asyncio.run(run())
    assert [r.rows for r in results] == [200] * 60 and store.entries == 60
    one_batch = batch("a0", 1, 200, 1).table.nbytes
    assert len(store.sizes) >= 60 * one_batch // (64 << 10)  # split, not one group
    assert max(store.sizes) <= (64 << 10) + 4096  # the bound, plus the entries' own fields


# --- the real agent's spool and sender against real collectors ---------------------------------


def _run_sender(sender: Sender) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    thread.start()
    return thread, stop


def _hello(node: str):
    return lambda: pb.HelloRequest(agent_id=node, hostname=node)


@pytest.mark.parametrize("bundles", [True, False], ids=["PushBundle", "Push"])
def test_the_agent_loses_nothing_when_a_nearly_full_disk_fails_its_big_batch_but_not_the_next(
    tmp_path, bundles
):
    disk = tmpfs(tmp_path / "disk", 64 << 20)
    col = CollectorProc(tmp_path, extra=["--db", str(disk.path / "c4.duckdb")]).start()
    spool = Spool(tmp_path / "spool", 1 << 30)
    now = datetime.now(UTC).replace(tzinfo=None)
    spool.append(
        "agent_heartbeat", HEARTBEAT.version, encode_ipc(heartbeat_table("n1", range(1, 60_001), now))
    )
    spool.append(
        "agent_heartbeat", HEARTBEAT.version, encode_ipc(heartbeat_table("n1", range(60_001, 60_002), now))
    )
    try:
        disk.fill(leave_bytes=256 << 10)  # room for a small commit, not for 60,000 rows
        sender = Sender(col.address, "n1", spool, _hello("n1"), bundles=bundles, backoff_max_s=0.3)
        thread, stop = _run_sender(sender)
        wait_for(lambda: Stats(col.address).get("commit_errors", 0) >= 2, what="commits failing")
        # seq 2 alone would fit, but it must not commit while seq 1 is unresolved
        assert scalar(col.address, "SELECT count(*) FROM agent_heartbeat WHERE node = 'n1'") == 0
        disk.free()
        wait_for(lambda: len(spool) == 0, what="both batches acknowledged")
        stop.set()
        thread.join(30)
        ticks = scalar(col.address, "SELECT count(DISTINCT tick) FROM agent_heartbeat WHERE node = 'n1'")
        assert (
            ticks == 60_001 == scalar(col.address, "SELECT count(*) FROM agent_heartbeat WHERE node = 'n1'")
        )
    finally:
        col.stop()
        disk.unmount()


def test_an_agent_told_of_sequences_its_spool_never_issued_starts_a_new_epoch_and_loses_nothing(tmp_path):
    col = CollectorProc(tmp_path).start()
    try:
        # someone pushed under this agent id with a sequence near the bound (before tokens were set up)
        poison = pb.Batch(
            agent_id="n2",
            seq=(1 << 62) - 1,
            table="agent_heartbeat",
            schema_version=HEARTBEAT.version,
            arrow_ipc=encode_ipc(heartbeat_table("n2", range(0, 1))),
        )
        with grpc.insecure_channel(col.address) as ch:
            assert list(pb_grpc.TelemetryStub(ch).Push(iter([poison]), timeout=30))[0].code == 0
        spool = Spool(tmp_path / "spool", 1 << 30)
        first_epoch = spool.epoch
        for t in range(1, 4):
            spool.append(
                "agent_heartbeat", HEARTBEAT.version, encode_ipc(heartbeat_table("n2", range(t, t + 1)))
            )
        sender = Sender(col.address, "n2", spool, _hello("n2"), backoff_max_s=0.3)
        thread, stop = _run_sender(sender)
        wait_for(lambda: len(spool) == 0, what="the batches acknowledged")
        stop.set()
        thread.join(30)
        assert spool.epoch != first_epoch and not sender.fatal
        ticks = scalar(col.address, "SELECT list(tick ORDER BY tick) FROM agent_heartbeat WHERE node = 'n2'")
        assert ticks == [0, 1, 2, 3]
    finally:
        col.stop()


class AlwaysAhead(pb_grpc.TelemetryServicer):
    """A collector that keeps claiming a sequence the agent never issued (damaged bookkeeping, or
    one that predates spool epochs while another agent pushes under the same id)."""

    def Hello(self, request, context):
        return pb.HelloReply(last_committed_seq=(1 << 62) - 1, max_batch_bytes=1 << 20)


def test_an_agent_that_cannot_continue_says_so_and_exits_non_zero(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from testkit.procs import AgentProc, free_port

    server = grpc.server(ThreadPoolExecutor(2))
    pb_grpc.add_TelemetryServicer_to_server(AlwaysAhead(), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    agent = AgentProc(tmp_path, f"127.0.0.1:{port}", "n3", ["--samplers", "heartbeat"]).start()
    try:
        code = agent.p.wait(60)
    finally:
        server.stop(0)
    assert code == 1
    assert "another agent using the same agent id" in agent.log()


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--node", "x" * 200], "set agent_id"),  # a node name too long to serve as the agent id
        (["--node", "gpu 17"], "hostname 'gpu 17'"),
        (["--node", "ok", "--agent-id", "bad\x01id"], "agent_id"),
        (["--node", "ok", "--job", "a\nb"], "job"),
    ],
)
def test_an_agent_the_collector_would_refuse_does_not_start(tmp_path, flags, named):
    """Every batch of such an agent would be refused for good: it must not start and drop its data."""
    import subprocess

    from testkit.procs import C4

    r = subprocess.run(
        C4 + ["agent", "--spool-dir", str(tmp_path / "spool"), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and named in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_hello_over_grpc_records_the_epoch_with_its_nodes_row(tmp_path):
    """A real collector: an agent's Hello with a spool epoch costs one commit (its nodes row and the epoch),
    no transaction of open_agent's own; the epoch is in the store's sequence table."""
    from testkit.inprocess_collector import RunningCollector

    col = RunningCollector(tmp_path)
    store = col.collector.store
    writes: list[str] = []  # the function that wrote agents' sequence rows, each time
    real_write_seqs = store._write_seqs
    store._write_seqs = lambda *a, **kw: (
        writes.append(sys._getframe(1).f_code.co_name) or real_write_seqs(*a, **kw)
    )
    try:
        with grpc.insecure_channel(col.address) as channel:
            stub = pb_grpc.TelemetryStub(channel)
            request = pb.HelloRequest(agent_id="h1", hostname="h1", spool_epoch=4242)
            assert stub.Hello(request, timeout=30).last_committed_seq == 0
            assert stub.Hello(request, timeout=30).last_committed_seq == 0  # again: nothing new to record
        assert writes == ["_commit_group"] and store.book.get("h1").epoch == 4242  # not open_agent
        epochs = store.cursor().execute("SELECT epoch FROM _c4_agent_seq WHERE agent_id = 'h1'").fetchall()
        assert epochs == [(4242,)]
    finally:
        col.stop()
