"""The lake's data path as the operator names it: storage that moved (a repointed symlink, a copy, another
mount point) is taken when the lake's files are there; a path that does not hold them is refused before
anything is written; a password in the lake URL never reaches a message or a log line. A real PostgreSQL
catalog and Parquet files on disk."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from testkit.postgres import Postgres

from c4.catalogue import load
from c4.collector.lake import LakeError, LakeStore, shown_url
from c4.collector.store import PendingBatch

CATALOGUE = load()


@pytest.fixture
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


def beats(agent: str, seq: int, rows: int) -> PendingBatch:
    spec = CATALOGUE["agent_heartbeat"]
    cols = {c: [None] * rows for c in spec.column_names}
    cols.update(node=[agent] * rows, agent_id=[agent] * rows, tick=list(range(rows)))
    return PendingBatch(agent, seq, spec, pa.Table.from_pydict(cols, schema=spec.arrow_schema))


def tick_sum(store: LakeStore) -> int:
    """A read of every row's value (``count(*)`` would be answered from the catalog's statistics)."""
    return store.cursor().execute("SELECT sum(tick) FROM agent_heartbeat").fetchone()[0]


def parquet_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*.parquet")}


def test_storage_moved_behind_a_symlink_is_taken_and_written_to(tmp_path, postgres, caplog):
    disk1, disk2, link = tmp_path / "disk1", tmp_path / "disk2", tmp_path / "lake"
    disk1.mkdir()
    link.symlink_to(disk1)
    store = LakeStore(postgres.url, str(link), CATALOGUE, "a")
    try:
        for seq in range(1, 4):
            assert not store.commit([beats("n1", seq, 50)])[0].error
        want = tick_sum(store)
    finally:
        store.close()
    assert want == 3 * sum(range(50))
    # the operator moves the storage: a copy on another disk, the symlink repointed, the old disk gone
    shutil.copytree(disk1, disk2, symlinks=True)
    link.unlink()
    link.symlink_to(disk2)
    shutil.rmtree(disk1)
    before = parquet_under(disk2)
    assert before
    with caplog.at_level(logging.WARNING, logger="c4.collector.lake"):
        store = LakeStore(postgres.url, str(link), CATALOGUE, "a")
    try:
        assert any(
            "lake data path moved" in r.getMessage() and str(disk2) in r.getMessage() for r in caplog.records
        )
        assert tick_sum(store) == want  # the old files are read from their new place
        assert not store.commit([beats("n1", 4, 50)])[0].error
        assert tick_sum(store) == want + sum(range(50))
        assert parquet_under(disk2) > before  # new files land beside them
        assert not disk1.exists()
    finally:
        store.close()
    again = LakeStore(postgres.url, str(link), CATALOGUE, "b")  # and the next start takes it as well
    try:
        assert tick_sum(again) == want + sum(range(50))
    finally:
        again.close()


def test_a_data_path_without_the_lakes_files_is_refused_before_anything_is_written(tmp_path, postgres):
    right, wrong = tmp_path / "lake", tmp_path / "typo"
    store = LakeStore(postgres.url, str(right), CATALOGUE, "a")
    try:
        for seq in range(1, 3):
            assert not store.commit([beats("n1", seq, 50)])[0].error
    finally:
        store.close()
    with pytest.raises(LakeError) as refused:
        LakeStore(postgres.url, str(wrong), CATALOGUE, "a")
    text = str(refused.value)
    assert (
        f"under {right.resolve()}/" in text
        and f"lake_data_path {wrong.resolve()}/ does not hold them" in text
    )
    assert not parquet_under(wrong)
    # the right path still works, and every row is there
    store = LakeStore(postgres.url, str(right), CATALOGUE, "a")
    try:
        assert tick_sum(store) == 2 * sum(range(50))
    finally:
        store.close()


def test_a_password_in_the_lake_url_is_never_shown(tmp_path):
    assert shown_url("postgres://c4:s3cret@db:5432/lake") == "postgres://c4:***@db:5432/lake"
    assert (
        shown_url("postgresql://c4:p%40ss@db/lake?sslmode=require")
        == "postgresql://c4:***@db/lake?sslmode=require"
    )
    assert shown_url("postgres://c4@db/lake") == "postgres://c4@db/lake"
    assert shown_url("host=db dbname=lake password=s3cret") == "host=db dbname=lake password=***"
    assert shown_url("mysql://u:s3cret@x/y") == "mysql://u:***@x/y"
    env = os.environ.get("PGPASSWORD")
    try:  # a catalog that refuses the connection: the error names the URL, without its password
        with pytest.raises(LakeError) as refused:
            LakeStore("postgres://c4:s3cret@127.0.0.1:1/lake", str(tmp_path / "lake"), CATALOGUE, "a")
        assert "127.0.0.1" in str(refused.value) and "s3cret" not in str(refused.value)
        with pytest.raises(LakeError) as bad_scheme:
            LakeStore("mysql://u:s3cret@x/y", str(tmp_path / "lake"), CATALOGUE, "a")
        assert "expected postgres://" in str(bad_scheme.value) and "s3cret" not in str(bad_scheme.value)
    finally:  # attaching puts the URL's password into PGPASSWORD for libpq
        if env is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = env
