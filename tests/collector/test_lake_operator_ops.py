"""Operators' acknowledge/resolve through any collector of a lake apply once on the leader, whenever they
were stored: between a new leader taking the lease and its first sync, committed after a newer one or
stamped by a collector whose clock runs behind, or hidden by a dead leader's open row; and the leader's
memory of the actions it took in stays bounded. Two lake stores on one real PostgreSQL, one process."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from test_holds_resume import fault_row
from testkit.postgres import Postgres

from c4.catalogue import load
from c4.collector.diagnosis import Diagnosis, operator_action_row
from c4.collector.ingest import Metrics
from c4.collector.lake import LakeStore, conninfo
from c4.collector.lease import PostgresLease
from c4.collector.store import PendingBatch
from c4.collector.writer import Writer
from c4.config import CollectorConfig

CATALOGUE = load()


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


class Member:
    """One collector's diagnosis on the lake: its store, writer, pool and lease (real PostgreSQL)."""

    def __init__(self, url: str, data: str, shard: str) -> None:
        self.store = LakeStore(url, data, CATALOGUE, shard)
        self.writer = Writer(self.store)
        self.pool = ThreadPoolExecutor(2)
        self.lease = PostgresLease(conninfo(url), shard, timeout_s=30)
        self.diagnosis = Diagnosis(
            CollectorConfig(), self.store, self.writer, Metrics(), self.pool, self.lease
        )

    def state(self, fault_id: str) -> str:
        """The fault's state in this collector's book ('' when not open there)."""
        assert self.diagnosis.runner is not None
        return (self.diagnosis.runner.book.open.get(fault_id) or {}).get("state", "")

    def close(self) -> None:
        self.lease.release()
        self.writer.close()
        self.pool.shutdown()
        self.store.close()


@pytest.fixture
def lake(tmp_path, postgres):
    """Members of a new lake (a database of its own on the module's PostgreSQL)."""
    db = f"lake_{tmp_path.name.lower()}"[:60].replace("-", "_")
    with psycopg.connect(conninfo(postgres.url), autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{db}"')
    url = postgres.url.rsplit("/", 1)[0] + f"/{db}"
    made: list[Member] = []

    def member(shard: str) -> Member:
        m = Member(url, str(tmp_path / "lake-data"), shard)
        made.append(m)
        return m

    yield member
    for m in made:
        m.close()


def store(member: Member, rows: list[dict], table: str = "faults") -> None:
    [result] = member.store.commit([PendingBatch.internal(CATALOGUE[table], rows)])
    assert not result.error


def opened(fault_id: str, at: datetime | None = None) -> dict:
    row = fault_row(fault_id, fault_id.split(":")[1].split("/")[0], "train")
    return row | ({"ts": at} if at else {})


def test_every_ack_through_a_follower_applies_once_on_the_leader_and_its_memory_stays_bounded(lake):
    async def main():
        a, b = lake("a"), lake("b")
        faults = [f"xid79:n{i}/gpu3" for i in range(8)]
        store(a, [opened(f) for f in faults])
        assert await b.diagnosis.lead()  # takes the lease: the book holds the open faults
        assert [b.state(f) for f in faults] == ["open"] * 8
        # an operator acknowledges through the follower before the leader's first sync
        prev, row = await a.diagnosis.update_fault(faults[0], "acknowledged", "ops", "")
        assert (prev, row["state"]) == ("open", "acknowledged")
        await b.diagnosis.sync_from_lake()
        assert b.state(faults[0]) == "acknowledged", "an ack stored before the leader's first sync was lost"

        await a.diagnosis.update_fault(faults[2], "acknowledged", "ops", "")
        await b.diagnosis.sync_from_lake()
        assert b.state(faults[2]) == "acknowledged"
        # another collector, whose clock runs 5 s behind, stores its ack only now
        behind = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=5)
        row = opened(faults[1], behind) | {"state": "acknowledged"}
        store(a, [row])
        store(a, [operator_action_row(faults[1], row, "acknowledged", "ops", "") | {"ts": behind}], "actions")
        await b.diagnosis.sync_from_lake()
        assert b.state(faults[1]) == "acknowledged", "an ack stamped before one already seen was skipped"

        # acks through the leader itself and the follower: each taken once, then forgotten past the look-back
        b.diagnosis.ops_lookback_s = 0.5
        for f in faults[3:5]:
            await b.diagnosis.update_fault(f, "acknowledged", "ops", "")
        for f in faults[5:]:
            await a.diagnosis.update_fault(f, "acknowledged", "ops", "")
        await b.diagnosis.sync_from_lake()
        assert [b.state(f) for f in faults] == ["acknowledged"] * 8
        await asyncio.sleep(1.0)  # past the look-back
        await b.diagnosis.update_fault(faults[0], "resolved", "ops", "")  # a newer action moves the floor
        await b.diagnosis.sync_from_lake()
        assert len(b.diagnosis._ops_taken) == 1, "actions older than the look-back are remembered forever"
        assert b.state(faults[0]) == "" and [b.state(f) for f in faults[1:]] == ["acknowledged"] * 7

    asyncio.run(main())


def test_a_new_leader_takes_an_ack_its_dead_predecessor_hid_behind_an_open_row(lake):
    async def main():
        a, b = lake("a"), lake("b")
        fid, other = "xid79:n1/gpu3", "xid79:n2/gpu3"
        t0 = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=30)
        store(a, [opened(fid, t0), opened(other, t0)])
        await a.diagnosis.update_fault(fid, "acknowledged", "ops", "")
        # the old leader's pass, running when the ack landed, stored an open row after it, then it died
        store(a, [opened(fid)])
        # an ack of an earlier episode of the other fault, resolved since, does not carry over
        ack = opened(other, t0 + timedelta(seconds=1)) | {"state": "acknowledged"}
        store(a, [ack])
        store(a, [operator_action_row(other, ack, "acknowledged", "ops", "") | {"ts": ack["ts"]}], "actions")
        store(a, [opened(other, t0 + timedelta(seconds=2)) | {"state": "resolved"}])
        store(a, [opened(other)])
        assert await b.diagnosis.lead()
        assert b.state(fid) == "acknowledged", "the new leader re-opened an acknowledged fault"
        assert b.state(other) == "open", "an ack of a resolved episode applied to the new one"

    asyncio.run(main())
