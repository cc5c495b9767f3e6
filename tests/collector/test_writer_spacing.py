"""The writer's commit spacing: under a steady stream of batches a commit starts no sooner than
``spacing_s`` after the one before (its group gathers meanwhile), every batch is stored once, and the
collector's config reaches the writer."""

from __future__ import annotations

import asyncio
import time

from test_store_settings import heartbeat_rows

from c4.catalogue import load
from c4.collector.store import PendingBatch, Store
from c4.collector.writer import Writer

CATALOGUE = load()
SPEC = CATALOGUE["agent_heartbeat"]


class TimedStore(Store):
    """The real store, noting when each commit starts and how many batches it holds."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.commit_starts: list[tuple[float, int]] = []
        self.commit_took_s: list[float] = []

    def commit(self, batches):
        start = time.monotonic()
        self.commit_starts.append((start, len(batches)))
        try:
            return super().commit(batches)
        finally:
            self.commit_took_s.append(time.monotonic() - start)


def stream_batches(
    store: Store, spacing_s: float, factor: float, agents: int = 40, every_s: float = 0.01
) -> Writer:
    """Each of ``agents`` agents sends one batch ``every_s`` apart through a writer with ``spacing_s`` and
    ``factor``; every result is awaited."""
    writer = Writer(store, spacing_s=spacing_s, spacing_factor=factor)

    async def scenario() -> None:
        futures = []
        for i in range(agents):
            batch = PendingBatch(f"agent-{i}", 1, SPEC, heartbeat_rows(SPEC, i, 10), stream=1)
            futures.append(writer.submit_many_async([batch]))
            await asyncio.sleep(every_s)
        results = await asyncio.wait_for(asyncio.gather(*futures), 60)
        assert all(r.rows == 10 and not r.error for (r,) in results), results

    try:
        asyncio.run(scenario())
    finally:
        writer.close()
    return writer


def test_commits_start_at_least_the_spacing_apart_and_store_every_batch(tmp_path):
    """40 batches 10 ms apart with a 0.15 s spacing (the factor so large that the spacing binds): each
    commit starts >= 0.15 s after the one before, so they come in groups, and all 40 are stored once."""
    store = TimedStore(tmp_path / "c4.duckdb", CATALOGUE)
    try:
        stream_batches(store, spacing_s=0.15, factor=1e9)
        starts = [t for t, _ in store.commit_starts]
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        assert gaps and min(gaps) >= 0.15 - 1e-3, gaps
        assert max(n for _, n in store.commit_starts) > 1  # batches that came meanwhile went together
        assert store.con.execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0] == 400
    finally:
        store.close()


def test_quick_commits_are_spaced_by_their_own_duration_times_the_factor(tmp_path):
    """With a long spacing, the factor sets it: a commit starts >= 3x the previous one's duration after
    the previous one started (a writer with little to do keeps committing quickly), every batch stored."""
    store = TimedStore(tmp_path / "c4.duckdb", CATALOGUE)
    try:
        stream_batches(store, spacing_s=600.0, factor=3.0, agents=30)
        starts = [t for t, _ in store.commit_starts]
        for i in range(1, len(starts)):
            assert starts[i] - starts[i - 1] >= 3.0 * store.commit_took_s[i - 1] - 1e-3
        assert len(starts) > 1
        assert store.con.execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0] == 300
    finally:
        store.close()


def test_the_first_batch_after_an_idle_spell_is_not_held_for_the_spacing(tmp_path):
    """A spacing counts from the last commit: a writer that committed nothing yet commits a batch at once,
    even with a spacing far longer than the wait allowed here."""
    store = TimedStore(tmp_path / "c4.duckdb", CATALOGUE)
    writer = Writer(store, spacing_s=600.0)

    async def one() -> None:
        batch = PendingBatch("a", 1, SPEC, heartbeat_rows(SPEC, 1, 10), stream=1)
        (result,) = await asyncio.wait_for(writer.submit_many_async([batch]), 30)
        assert result.rows == 10

    try:
        asyncio.run(one())
        assert len(store.commit_starts) == 1
    finally:
        writer.close()
        store.close()


def test_the_collector_config_carries_the_spacing():
    """group_commit_spacing_s is a collector setting: 0.25 s by default, refused when negative or over 5 s."""
    import pytest
    from pydantic import ValidationError

    from c4.config import CollectorConfig

    assert CollectorConfig().group_commit_spacing_s == 0.25
    assert CollectorConfig(group_commit_spacing_s=0.2).group_commit_spacing_s == 0.2
    for bad in (-0.1, 6.0):
        with pytest.raises(ValidationError):
            CollectorConfig(group_commit_spacing_s=bad)


def test_side_rows_move_in_while_the_next_group_waits_for_the_spacing(tmp_path):
    """After a checkpoint the side file's rows move in before the next commit; with a spacing to wait out,
    the writer moves them during the wait: the next commit finds nothing left to move, and every row is
    in the store once."""
    store = TimedStore(
        tmp_path / "c4.duckdb", CATALOGUE, checkpoint_wal_bytes=1 << 40, background_checkpoints=True
    )
    pending_at_commit: list[bool] = []
    real_commit = store.commit

    def commit(batches):
        pending_at_commit.append(store.side_pending)
        return real_commit(batches)

    store.commit = commit
    writer = Writer(store, spacing_s=0.5, spacing_factor=1e9)

    async def scenario() -> None:
        store.begin_diversion()  # a checkpoint runs: this commit goes to the side file
        one = PendingBatch("a", 1, SPEC, heartbeat_rows(SPEC, 1, 10), stream=1)
        assert (await writer.submit_many_async([one]))[0].rows == 10
        store.end_diversion()
        assert store.side_pending
        two = PendingBatch("a", 2, SPEC, heartbeat_rows(SPEC, 2, 10), stream=1)
        assert (await asyncio.wait_for(writer.submit_many_async([two]), 30))[0].rows == 10

    try:
        asyncio.run(scenario())
        assert pending_at_commit == [False, False]  # the second commit found the rows moved already
        assert store.side_moves == 1 and not store.side_pending
        assert store.con.execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0] == 20
    finally:
        writer.close()
        store.close()


def test_the_flush_advice_reads_the_time_spent_in_commits_not_in_jobs(tmp_path):
    from c4.collector.ingest import commit_busy_clock

    store = Store(tmp_path / "c4.duckdb", CATALOGUE)
    writer = Writer(store)
    busy = commit_busy_clock(writer)
    seen: dict[str, float] = {}

    async def scenario() -> None:
        batches = [
            PendingBatch(f"agent-{i}", 1, SPEC, heartbeat_rows(SPEC, i, 10), stream=1) for i in range(5)
        ]
        results = await asyncio.wait_for(writer.submit_many_async(batches), 60)
        assert all(r.rows == 10 and not r.error for r in results), results
        seen["after_commit"] = busy()
        await asyncio.wait_for(writer.call_async(lambda _store: time.sleep(0.2)), 60)  # a maintenance job

    try:
        assert busy is not None and busy() == 0.0
        asyncio.run(scenario())
        assert seen["after_commit"] > 0  # the commit counted
        assert busy() == seen["after_commit"]  # the job did not
        assert writer.busy_s >= seen["after_commit"] + 0.2  # though the writer was busy with it
        assert commit_busy_clock(object()) is None  # a sink forwarding to the store process: latency decides
    finally:
        writer.close()
        store.close()


def test_a_job_held_by_a_checkpoint_does_not_cut_the_commits_short(tmp_path):
    """A maintenance job that comes while the file checkpoints waits for the checkpoint's end, and the
    commits meanwhile keep their spacing: the job is not put back in the queue, where each group that
    met it again was cut short (a rollup during a 3 s checkpoint made 14 commits a second)."""
    store = TimedStore(
        tmp_path / "c4.duckdb", CATALOGUE, checkpoint_wal_bytes=1 << 40, background_checkpoints=True
    )
    writer = Writer(store, spacing_s=0.15, spacing_factor=1e9)
    ran_at: list[float] = []
    ended_at: list[float] = []

    async def scenario() -> None:
        store.begin_diversion()
        futures = []
        job = None
        for i in range(60):
            batch = PendingBatch(f"agent-{i}", 1, SPEC, heartbeat_rows(SPEC, i, 10), stream=1)
            futures.append(writer.submit_many_async([batch]))
            if i == 5:
                job = writer.call_async(lambda _store: ran_at.append(time.monotonic()))
            await asyncio.sleep(0.01)
        results = await asyncio.wait_for(asyncio.gather(*futures), 60)
        assert all(r.rows == 10 and not r.error for (r,) in results), results
        assert not ran_at  # held while the checkpoint runs
        ended_at.append(time.monotonic())
        store.end_diversion()
        await asyncio.wait_for(job, 30)

    try:
        asyncio.run(scenario())
        starts = [t for t, _ in store.commit_starts]
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        assert gaps and min(gaps) >= 0.15 - 1e-3, gaps
        assert ran_at and ran_at[0] >= ended_at[0]
        deadline = time.monotonic() + 30  # the idle writer moves the side file's rows in: wait for it
        while getattr(store, "side_pending", False) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.con.execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0] == 600
    finally:
        writer.close()
        store.close()


def test_a_writer_closed_while_it_gathers_runs_the_jobs_it_held(tmp_path):
    """close() comes while a group gathers (the spacing still to wait out), with a job held for the
    checkpoint under way: the group commits and the job runs before the writer ends, its future answered
    (it was left unanswered when the stop came in the gathering)."""
    store = TimedStore(
        tmp_path / "c4.duckdb", CATALOGUE, checkpoint_wal_bytes=1 << 40, background_checkpoints=True
    )
    writer = Writer(store, spacing_s=1.0, spacing_factor=1e9)
    ran: list[bool] = []

    async def scenario() -> None:
        first = PendingBatch("a", 1, SPEC, heartbeat_rows(SPEC, 1, 10), stream=1)
        assert (await writer.submit_many_async([first]))[0].rows == 10  # the spacing now applies
        store.begin_diversion()
        job = writer.call_async(lambda _store: ran.append(True))  # held: the file checkpoints
        await asyncio.sleep(0.1)
        second = PendingBatch("a", 2, SPEC, heartbeat_rows(SPEC, 2, 10), stream=1)
        committed = writer.submit_many_async([second])
        await asyncio.sleep(0.1)  # the writer gathers the second's group: close() comes meanwhile
        await asyncio.get_running_loop().run_in_executor(None, writer.close)
        assert (await asyncio.wait_for(committed, 5))[0].rows == 10
        await asyncio.wait_for(job, 5)

    try:
        asyncio.run(scenario())
        assert ran == [True]
    finally:
        store.end_diversion()
        store.close()
