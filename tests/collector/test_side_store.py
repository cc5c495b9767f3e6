"""While the store's file checkpoints, commits go to a side file and move in after, exactly once."""

from __future__ import annotations

import asyncio
import time

import pytest
from test_store_settings import heartbeat_rows

from c4.catalogue import load
from c4.collector import side_store
from c4.collector.store import PendingBatch, Store
from c4.collector.writer import Writer

CATALOGUE = load()
SPEC = CATALOGUE["agent_heartbeat"]
#: so large that the checkpointer never starts a checkpoint of its own in these tests
NEVER = 1 << 40


def open_store(db, background: bool = True) -> Store:
    return Store(db, CATALOGUE, checkpoint_wal_bytes=NEVER, background_checkpoints=background)


def count(store: Store, table: str = "agent_heartbeat", db: str = "") -> int:
    prefix = f"{db}." if db else ""
    return store.con.execute(f'SELECT count(*) FROM {prefix}"{table}"').fetchone()[0]


def commit(store: Store, agent: str, seq: int, n: int = 50, stream: int = 1):
    (result,) = store.commit([PendingBatch(agent, seq, SPEC, heartbeat_rows(SPEC, seq, n), stream=stream)])
    return result


def crash(store: Store) -> None:
    """The process dies: no settle, no checkpoint; only DuckDB's own committed log survives."""
    store.checkpointer.stop()
    store.con.close()


def stored_seq(db, agent: str) -> int:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute("SELECT last_seq FROM _c4_agent_seq WHERE agent_id = ?", [agent]).fetchone()
        return int(row[0]) if row else 0
    finally:
        con.close()


def assert_reopened(db, rows: int, seq: int) -> None:
    """The store opened afresh (no background checkpoints) holds ``rows`` heartbeat rows and agent a's
    last sequence ``seq``."""
    again = open_store(db, background=False)
    try:
        assert count(again) == rows and again.known_seq("a") == seq
    finally:
        again.close()


def test_commits_during_a_checkpoint_land_in_the_side_file_then_move_in_once(tmp_path):
    store = open_store(tmp_path / "c4.duckdb")
    try:
        assert commit(store, "a", 1).rows == 50  # before: straight into the store
        store.begin_diversion()
        assert commit(store, "a", 2).rows == 50 and commit(store, "b", 1).rows == 50
        assert count(store) == 50 and count(store, db=side_store.SIDE_DB) == 100
        assert store.known_seq("a") == 2 and store.side_pending
        assert commit(store, "a", 2).duplicate  # a resend while diverted is still a duplicate
        store.settle()  # the checkpoint is not over: nothing moves
        assert count(store) == 50
        store.end_diversion()
        store.settle()
        assert count(store) == 150 and count(store, db=side_store.SIDE_DB) == 0
        assert not store.side_pending and store.side_moves == 1
        seqs = dict(store.con.execute("SELECT agent_id, last_seq FROM _c4_agent_seq").fetchall())
        assert seqs == {"a": 2, "b": 1}
        assert commit(store, "a", 3).rows == 50 and count(store) == 200  # and back to the store itself
    finally:
        store.close()


def test_a_commit_after_the_checkpoint_moves_the_side_rows_first(tmp_path):
    store = open_store(tmp_path / "c4.duckdb")
    try:
        store.begin_diversion()
        commit(store, "a", 1)
        store.end_diversion()
        assert commit(store, "a", 2).rows == 50  # no idle moment in between: the commit moves them
        assert count(store) == 100 and count(store, db=side_store.SIDE_DB) == 0
    finally:
        store.close()


@pytest.mark.parametrize("background_after", [True, False])
def test_rows_left_in_the_side_file_by_a_crash_move_in_at_start(tmp_path, background_after):
    """Acked rows are in the side file when the process dies: the next start (even with background
    checkpoints turned off) moves them in, with their sequence numbers, so resends are duplicates."""
    db = tmp_path / "c4.duckdb"
    store = open_store(db)
    commit(store, "a", 1)
    store.begin_diversion()
    commit(store, "a", 2)
    commit(store, "b", 7)
    crash(store)
    again = open_store(db, background=background_after)
    try:
        assert count(again) == 150
        assert again.known_seq("a") == 2 and again.known_seq("b") == 7
        assert commit(again, "b", 7).duplicate
    finally:
        again.close()
    assert stored_seq(db, "b") == 7


def test_a_crash_between_the_move_and_the_emptying_does_not_duplicate(tmp_path, monkeypatch):
    db = tmp_path / "c4.duckdb"
    store = open_store(db)
    store.begin_diversion()
    commit(store, "a", 1)
    store.end_diversion()

    def dies(*_args):
        raise RuntimeError("killed after the move")

    monkeypatch.setattr(store, "_empty_side", dies)
    with pytest.raises(RuntimeError):
        store.settle()
    crash(store)
    monkeypatch.undo()
    again = open_store(db)
    try:
        assert count(again) == 50  # moved once, not twice
        assert count(again, db=side_store.SIDE_DB) == 0 and again.known_seq("a") == 1
    finally:
        again.close()


def test_side_rows_of_an_older_table_shape_move_in_by_name(tmp_path):
    """A side file written by a version whose table lacked a column: its rows still come in."""
    db = tmp_path / "c4.duckdb"
    store = open_store(db)
    store.begin_diversion()
    commit(store, "a", 1)
    store.con.execute(f'ALTER TABLE {side_store.SIDE_DB}."agent_heartbeat" DROP COLUMN uptime_s')
    crash(store)
    again = open_store(db)
    try:
        assert count(again) == 50
        assert again.con.execute('SELECT count(uptime_s) FROM "agent_heartbeat"').fetchone()[0] == 0
        cols = side_store.side_columns(again.con, "agent_heartbeat")
        assert "uptime_s" in cols  # the side table is of today's shape again
    finally:
        again.close()


def test_the_writer_holds_maintenance_jobs_while_the_file_checkpoints(tmp_path):
    """Retention and rollups write the store's own tables, which wait for a checkpoint: the writer
    runs them after it, and meanwhile agents' batches are committed (to the side file)."""
    store = open_store(tmp_path / "c4.duckdb")
    writer = Writer(store)
    ran: list[float] = []

    async def scenario():
        store.begin_diversion()
        job = writer.call_async(lambda s: ran.append(time.monotonic()) or count(s))
        batch = PendingBatch("a", 1, SPEC, heartbeat_rows(SPEC, 1, 50), stream=1)
        (result,) = await writer.submit_many_async([batch])
        assert result.rows == 50 and not ran
        await asyncio.sleep(0.3)
        assert not ran and not job.done()
        store.end_diversion()
        assert await asyncio.wait_for(job, 10) in (0, 50)  # ran after the checkpoint
        deadline = time.monotonic() + 10
        while store.side_pending and time.monotonic() < deadline:  # the idle writer moves them in
            await asyncio.sleep(0.02)
        assert not store.side_pending

    try:
        asyncio.run(scenario())
        assert count(store) == 50
    finally:
        writer.close()
        store.close()


def test_real_checkpoints_divert_and_lose_nothing(tmp_path):
    """The checkpointer's own checkpoints (a small WAL) with commits running all along: every row and
    sequence number ends in the store, and the side file moved in at least once."""
    db = tmp_path / "c4.duckdb"
    store = Store(db, CATALOGUE, checkpoint_wal_bytes=1 << 20, background_checkpoints=True)
    seq = committed = 0
    try:
        deadline = time.monotonic() + 60
        while (store.checkpointer.checkpoints < 2 or store.side_moves < 1) and time.monotonic() < deadline:
            seq += 1
            result = commit(store, "a", seq, 2000)
            assert not result.error
            committed += result.rows
        assert store.checkpointer.checkpoints >= 2 and store.side_moves >= 1
    finally:
        store.close()
    assert_reopened(db, committed, seq)


def test_a_full_disk_while_diverted_refuses_commits_and_loses_none(tmp_path):
    """The disk fills while commits go to the side file: they fail (the agent resends), nothing
    acknowledged is lost, and once space returns the side rows move in and commits go on."""
    from testkit.small_disk import fill, small_tmpfs

    with small_tmpfs(tmp_path / "disk", "24m") as disk:
        db = disk / "c4.duckdb"
        store = open_store(db)
        try:
            store.begin_diversion()
            assert commit(store, "a", 1).rows == 50
            filler = fill(disk)
            failed = commit(store, "a", 2, 20_000)
            assert failed.error and "No space left on device" in failed.error and not failed.refused
            store.end_diversion()
            with pytest.raises(Exception, match="No space left on device"):
                store.settle()  # the move fails on the full disk: the rows stay in the side file
            assert store.side_pending
            filler.unlink()
            assert commit(store, "a", 2, stream=2).rows == 50  # the resend, on the agent's new stream
            assert count(store) == 100 and store.known_seq("a") == 2 and not store.side_pending
        finally:
            store.close()
        assert_reopened(db, 100, 2)


def test_a_side_checkpoint_failing_on_a_full_disk_attaches_it_again(tmp_path, monkeypatch):
    """DuckDB gives up on a file whose checkpoint failed: the store attaches the side file again, or,
    while that fails too, stops diverting (commits wait for checkpoints, as without a side file) and
    tries again at the next checkpoint; once space is back commits are diverted again, none lost."""
    from testkit.small_disk import fill, small_tmpfs

    monkeypatch.setattr(side_store, "SIDE_WAL_CHECKPOINT_BYTES", 0)
    with small_tmpfs(tmp_path / "disk", "24m") as disk:
        db = disk / "c4.duckdb"
        store = open_store(db)
        fold = store._fold_side_log
        fillers = []

        def fold_on_a_full_disk():
            fillers.append(fill(disk, f"filler{len(fillers)}"))
            fold()

        monkeypatch.setattr(store, "_fold_side_log", fold_on_a_full_disk)
        try:
            store.begin_diversion()
            assert commit(store, "a", 1).rows == 50
            store.end_diversion()
            store.settle()
            assert count(store) == 50 and not store.side_pending
            assert fillers  # the side file's checkpoint ran on a full disk
            store.begin_diversion()  # still full: diverted only if the side file could be attached
            assert store.diverting == store.side_usable
            store.end_diversion()
            for f in fillers:
                f.unlink()
            monkeypatch.setattr(store, "_fold_side_log", fold)
            store.begin_diversion()  # space is back: attached and diverted again
            assert store.side_usable and store.diverting
            assert commit(store, "a", 2).rows == 50 and store.side_pending
            store.end_diversion()
            store.settle()
            assert count(store) == 100 and not store.side_pending
        finally:
            store.close()
        assert_reopened(db, 100, 2)


def test_the_consoles_rows_per_table_lists_the_stores_tables_once(tmp_path):
    """The side file's tables are attached beside the store's; the console's preset shows the store's."""
    from c4.ui.queries.console import EXAMPLES

    store = open_store(tmp_path / "c4.duckdb")
    try:
        store.begin_diversion()
        commit(store, "a", 1)
        with store.reading() as cur:
            names = [r[0] for r in cur.execute(EXAMPLES["Rows per table"]).fetchall()]
        assert len(names) == len(set(names)) and "agent_heartbeat" in names
        assert side_store.GENERATION_TABLE not in names
    finally:
        store.close()


def test_a_side_file_replaced_after_a_move_keeps_the_next_rows(tmp_path):
    """The operator removes the side file (say it was damaged) after generation 0 moved in: the new
    file's rows are not taken for rows moved already, neither when settling nor after a crash."""
    db = tmp_path / "c4.duckdb"
    store = open_store(db)
    store.begin_diversion()
    commit(store, "a", 1)
    store.end_diversion()
    store.settle()
    store.close()
    for path in tmp_path.glob("c4.duckdb.side*"):
        path.unlink()
    again = open_store(db)
    try:
        again.begin_diversion()
        assert commit(again, "a", 2).rows == 50
        again.end_diversion()
        again.settle()
        assert count(again) == 100
        again.begin_diversion()
        assert commit(again, "a", 3).rows == 50
    finally:
        crash(again)
    last = open_store(db)
    try:
        assert count(last) == 150 and last.known_seq("a") == 3
    finally:
        last.close()


def test_commits_after_a_move_whose_emptying_failed_are_kept(tmp_path):
    """The move went in but emptying the side file failed (full disk): later commits must not land in
    the generation recorded as moved, or the next emptying (or a restart) drops them, acked."""
    from testkit.small_disk import fill, small_tmpfs

    with small_tmpfs(tmp_path / "disk", "48m") as disk:
        db = disk / "c4.duckdb"
        store = open_store(db)
        empty = store._empty_side
        fillers = []

        def empty_on_a_full_disk(*args):
            fillers.append(fill(disk, f"filler{len(fillers)}"))
            empty(*args)

        store._empty_side = empty_on_a_full_disk
        try:
            store.begin_diversion()
            assert commit(store, "a", 1, 20_000).rows == 20_000
            store.end_diversion()
            with pytest.raises(Exception, match="No space left on device"):
                store.settle()
            del store._empty_side
            for f in fillers:
                f.unlink()
            assert count(store) == 20_000 and store.side_pending
            store.begin_diversion()
            assert commit(store, "a", 2).rows == 50  # acked: must survive
            store.end_diversion()
            store.settle()
            assert count(store) == 20_050 and store.known_seq("a") == 2 and not store.side_pending
            store.begin_diversion()
            assert commit(store, "a", 3).rows == 50
        finally:
            crash(store)
        assert_reopened(db, 20_100, 3)


def test_an_empty_side_file_left_by_a_full_disk_is_made_anew(tmp_path):
    """A start on a disk with a few hundred KiB free leaves the side file at zero bytes (DuckDB created
    it, could not write its header); DuckDB refuses such a file ever after. It holds nothing: the next
    start makes it anew, and commits divert into it as before."""
    db = tmp_path / "c4.duckdb"
    open_store(db, background=False).close()
    side_store.side_path(db).write_bytes(b"")
    store = open_store(db)
    try:
        store.begin_diversion()
        assert commit(store, "a", 1).rows == 50 and count(store, db=side_store.SIDE_DB) == 50
        store.end_diversion()
        store.settle()
        assert count(store) == 50
    finally:
        store.close()


def test_a_damaged_side_file_stops_the_start_and_is_kept(tmp_path):
    """A side file DuckDB cannot read may hold acked rows: the store does not start, says which file,
    and leaves it for the operator."""
    db = tmp_path / "c4.duckdb"
    open_store(db).close()
    side = side_store.side_path(db)
    side.write_bytes(side.read_bytes()[:5000])
    with pytest.raises(Exception, match=str(side)):
        open_store(db)
    assert side.stat().st_size == 5000


def test_a_side_file_duckdb_gave_up_on_is_attached_again(tmp_path):
    """DuckDB checkpoints the side file itself inside a diverted commit that takes its log past the
    threshold; on a full disk that checkpoint fails and DuckDB refuses the file until it is attached
    again. Once space is back, commits (and the move) go on without a restart, nothing acked lost."""
    from testkit.small_disk import fill_up, small_tmpfs

    with small_tmpfs(tmp_path / "disk", "64m") as disk:
        db = disk / "c4.duckdb"
        store = Store(db, CATALOGUE, checkpoint_wal_bytes=1 << 20, background_checkpoints=True)
        store.checkpointer.stop()  # the test says when the file "checkpoints"
        wal = side_store.side_path(db).with_name("c4.duckdb.side.wal")
        acked = seq = 0
        try:
            store.begin_diversion()
            while not wal.exists() or wal.stat().st_size < 3_500_000:
                seq += 1
                acked += commit(store, "a", seq, 5000).rows
            filler = fill_up(disk, 600_000, "filler")
            errors = []
            for stream in range(2, 8):
                result = commit(store, "a", seq + 1, 5000, stream=stream)
                acked += result.rows
                seq += 1 if result.rows else 0
                errors += [result.error] if result.error else []
            assert any("invalidated" in e for e in errors), errors
            filler.unlink()
            store.end_diversion()
            result = commit(store, "a", seq + 1, 50, stream=9)
            assert result.rows == 50, result.error
            acked += 50
            store.settle()
            assert count(store) == acked and not store.side_pending
        finally:
            store.close()
        assert_reopened(db, acked, seq + 1)


def test_a_side_file_left_detached_is_attached_at_the_next_commit(tmp_path):
    """Attaching the side file again can fail (the disk still full) after it was detached: the next
    commit attaches it again, rather than every commit failing until a restart."""
    db = tmp_path / "c4.duckdb"
    store = open_store(db)
    try:
        store.begin_diversion()
        assert commit(store, "a", 1).rows == 50
        store.end_diversion()
        store.con.execute(f"DETACH {side_store.SIDE_DB}")  # as a failed attempt to attach it again leaves it
        assert commit(store, "a", 2).rows == 50  # the move fails, attaches it again; the commit goes in
        store.settle()
        assert count(store) == 100 and store.known_seq("a") == 2 and not store.side_pending
    finally:
        store.close()


def test_an_idle_writer_whose_move_fails_does_not_try_again_at_every_wake(tmp_path, monkeypatch, caplog):
    """On a full disk the move fails until space returns: the idle writer (which wakes every 50 ms
    while side rows wait) tries again after a pause, not 20 times a second, each with a warning."""
    import logging

    from testkit.small_disk import fill, small_tmpfs

    from c4.collector import writer as writer_module

    monkeypatch.setattr(writer_module, "SETTLE_RETRY_S", 3600.0)
    with small_tmpfs(tmp_path / "disk", "24m") as disk:
        store = open_store(disk / "c4.duckdb")
        store.begin_diversion()
        assert commit(store, "a", 1, 20_000).rows == 20_000
        filler = fill(disk)
        writer = Writer(store)  # idle: it moves the side rows on its own
        try:
            with caplog.at_level(logging.WARNING, logger="c4.collector.writer"):
                store.end_diversion()
                deadline = time.monotonic() + 10
                while not caplog.records and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.5)  # ten more wakes of the idle writer
            failures = [r for r in caplog.records if "moving the side file's rows failed" in r.message]
            assert len(failures) == 1 and store.side_pending
        finally:
            filler.unlink()
            writer.close()
            store.close()


def test_a_store_checkpoint_failing_on_a_full_disk_opens_the_store_again(tmp_path, monkeypatch):
    """DuckDB invalidates the whole instance when a checkpoint of the store's own file fails (a full
    disk): every later statement failed until a restart. The store opens the file again (the log
    replays every acknowledged commit); while that fails, commits and Hellos fail at once (agents send
    again); once it opens, a full disk is only a full disk again, and with space back commits, reads and
    checkpoints go on, nothing lost or doubled."""
    import duckdb
    from testkit.small_disk import fill, small_tmpfs

    from c4.collector.store import StoreUnavailable

    with small_tmpfs(tmp_path / "disk", "24m") as disk:
        db = disk / "c4.duckdb"
        store = open_store(db)
        try:
            assert commit(store, "a", 1, 20_000).rows == 20_000
            filler = fill(disk)
            cur = store.con.cursor()
            assert not store.checkpointer._checkpoint(cur)  # the checkpointer's own call, refused
            cur.close()

            def cannot_open():
                raise duckdb.IOException("IO Error: cannot open the file (the test says)")

            with monkeypatch.context() as m:
                m.setattr(store, "_connect", cannot_open)
                failed = commit(store, "a", 2)
                assert failed.error and not failed.refused
                assert "No space left on device" in store.invalidated and store.reopens == 0
                with pytest.raises(StoreUnavailable):  # Hello: UNAVAILABLE, the agent tries again
                    store.open_agent("b", 7)
                store._reopen_after = 0.0
                again = commit(store, "a", 2, stream=2)
                assert again.error.startswith("store unavailable") and not again.refused
            store._reopen_after = 0.0
            full = commit(store, "a", 2, stream=3)  # opened again, onto a disk still full
            assert store.reopens == 1 and not store.invalidated
            assert "No space left on device" in full.error and not full.refused
            assert count(store) == 20_000  # every acknowledged row replayed from the log
            filler.unlink()
            assert commit(store, "a", 2, stream=4).rows == 50  # the resend
            assert count(store) == 20_050 and store.known_seq("a") == 2
            store.checkpoint()  # the file checkpoints again
            assert commit(store, "a", 3, stream=4).rows == 50
            assert commit(store, "a", 3, stream=4).duplicate
        finally:
            store.close()
        assert_reopened(db, 20_100, 3)


def test_an_idle_writer_opens_an_invalidated_store_again_for_readers(tmp_path):
    """No commit comes after the failed checkpoint (agents idle): the checkpointer says it failed, and
    the idle writer opens the store again by itself, so reads answer again."""
    from testkit.small_disk import fill, small_tmpfs

    with small_tmpfs(tmp_path / "disk", "24m") as disk:
        db = disk / "c4.duckdb"
        store = open_store(db)
        writer = Writer(store)
        try:
            assert commit(store, "a", 1, 20_000).rows == 20_000
            filler = fill(disk)
            cur = store.con.cursor()
            assert not store.checkpointer._checkpoint(cur)
            cur.close()
            deadline = time.monotonic() + 30
            while store.reopens < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            # found by the checkpointer's report, and opened again with no commit coming
            assert store.reopens == 1 and not store.invalidated
            assert count(store) == 20_000  # reads answer again, every acknowledged row there
            filler.unlink()
        finally:
            writer.close()
            store.close()
        assert_reopened(db, 20_000, 1)
