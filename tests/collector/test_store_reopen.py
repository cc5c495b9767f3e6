"""A real agent sending to a real collector whose disk fills while its store checkpoints: DuckDB
invalidates the store, the collector opens it again by itself, and once space is back every tick the
agent sampled is stored exactly once, with no restart of either."""

from __future__ import annotations

import time

from testkit.agent_rig import heartbeat_agent
from testkit.inprocess_collector import RunningCollector
from testkit.small_disk import fill, small_tmpfs
from testkit.wait import wait_for

from c4.security import ClientSecurity
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc


def stats(col) -> dict[str, int]:
    """The collector's Stats RPC, as an operator's tooling reads it."""
    with ClientSecurity().channel(col.address) as ch:
        return dict(pb_grpc.TelemetryStub(ch).Stats(pb.StatsRequest(), timeout=10).counters)


def test_a_collector_whose_store_checkpoint_fails_on_a_full_disk_goes_on_without_a_restart(tmp_path):
    with small_tmpfs(tmp_path / "disk", "24m") as disk:
        col = RunningCollector(disk)
        agent, hb = heartbeat_agent(tmp_path, tmp_path / "spool", collector=col.address)
        agent.start()
        try:
            wait_for(lambda: col.committed_batches() > 10, 30, "agent's batches committed")
            store = col.collector.store
            filler = fill(disk)
            cur = store.con.cursor()
            assert not store.checkpointer._checkpoint(cur)  # the checkpointer's call, on a full disk
            cur.close()
            # the agent's next commit meets the invalidated store: it is opened again (the full disk then
            # fails commits as a full disk does, and the agent keeps its batches)
            wait_for(lambda: store.reopens >= 1, 30, "store opened again")
            assert stats(col)["checkpoint_failures"] == 1
            time.sleep(0.5)
            filler.unlink()
            resumed_from = col.committed_batches()
            wait_for(lambda: col.committed_batches() > resumed_from + 10, 30, "commits going on")
            counters = stats(col)
            assert counters["store_invalidated"] == 0 and counters["store_reopens"] == 1
            assert counters["commit_errors"] > 0  # the full disk did refuse commits meanwhile
        finally:
            agent.stop()  # drains its spool
        assert len(agent.spool) == 0
        rows, ticks = col.rows("rig")
        col.stop()
        assert rows == ticks == hb.tick  # every sampled tick stored, once
