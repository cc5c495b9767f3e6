"""The lake's data path as the operator names it: kept with its symlinks, so storage moved behind one is
the same lake; any other directory than the catalog's (a copy, a typo) and a directory holding none of
the lake's files (a share not mounted) refused before anything is written; a password in the lake URL
never reaches a message or a log line. A real PostgreSQL catalog and Parquet files on disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from testkit.lake_rows import CATALOGUE, beats

from c4.collector.lake import LakeError, LakeStore, conninfo, shown_url, without_password


def tick_sum(store: LakeStore) -> int:
    """A read of every row's value (``count(*)`` would be answered from the catalog's statistics)."""
    return store.cursor().execute("SELECT sum(tick) FROM agent_heartbeat").fetchone()[0]


def parquet_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*.parquet")}


def test_storage_moved_behind_a_symlink_stays_the_same_lake(tmp_path, postgres):
    """The catalog keeps the data path as the operator named it, symlink and all: the storage copied to
    another disk and the symlink repointed is the same lake, read and written there, by the writer and by
    the locked-down reader alike."""
    disk1, disk2, link = tmp_path / "disk1", tmp_path / "disk2", tmp_path / "lake"
    disk1.mkdir()
    link.symlink_to(disk1)
    store = LakeStore(postgres.url, str(link), CATALOGUE, "a")
    try:
        for seq in range(1, 4):
            assert not store.commit([beats("n1", seq, 50)])[0].error
        want = tick_sum(store)
        assert store.attached_data_path == f"{link}/"
    finally:
        store.close()
    assert want == 3 * sum(range(50))
    shutil.copytree(disk1, disk2, symlinks=True)  # every collector stopped; the storage moved
    link.unlink()
    link.symlink_to(disk2)
    shutil.rmtree(disk1)
    before = parquet_under(disk2)
    store = LakeStore(postgres.url, str(link), CATALOGUE, "a")
    try:
        assert tick_sum(store) == want  # the old files, read from their new place
        assert not store.commit([beats("n1", 4, 50)])[0].error
        want += sum(range(50))
        assert tick_sum(store) == want
        assert store.reader.execute("SELECT sum(tick) FROM agent_heartbeat").fetchone()[0] == want
        assert parquet_under(disk2) > before and not disk1.exists()  # new files beside them
    finally:
        store.close()


def test_a_catalog_keeping_the_resolved_directory_is_reached_through_a_symlink(tmp_path, postgres):
    """A lake whose catalog names a directory (as C4 kept it before symlinks were kept) is the same lake
    when a collector names it through a symlink leading there."""
    real, link = tmp_path / "real", tmp_path / "lake"
    real.mkdir()
    link.symlink_to(real)
    store = LakeStore(postgres.url, str(real), CATALOGUE, "a")
    try:
        assert not store.commit([beats("n1", 1, 50)])[0].error
    finally:
        store.close()
    store = LakeStore(postgres.url, str(link), CATALOGUE, "b")
    try:
        assert store.attached_data_path == f"{real}/"
        assert tick_sum(store) == sum(range(50))
        assert store.reader.execute("SELECT sum(tick) FROM agent_heartbeat").fetchone()[0] == sum(range(50))
    finally:
        store.close()


def test_another_directory_is_refused_even_holding_a_copy_of_the_lake(tmp_path, postgres):
    """Two copies in use would split the lake: each collector's new files only in its own copy, reads of
    the other's failing, and rows lost when one copy is thrown away. So a collector whose data path is not
    the catalog's is refused, with a copy there or not (a typo), before anything is written."""
    right, copy, typo = tmp_path / "lake", tmp_path / "copy", tmp_path / "typo"
    store = LakeStore(postgres.url, str(right), CATALOGUE, "a")
    try:
        for seq in range(1, 3):
            assert not store.commit([beats("n1", seq, 50)])[0].error
        shutil.copytree(right, copy)
        for path in (copy, typo):
            with pytest.raises(LakeError) as refused:
                LakeStore(postgres.url, str(path), CATALOGUE, "b")
            text = str(refused.value)
            assert f"under {right}/, and lake_data_path is {path}/, another directory" in text, text
        assert parquet_under(copy) == parquet_under(right) and not parquet_under(typo)
        assert not store.commit([beats("n1", 3, 50)])[0].error  # the lake's own collector is unaffected
        assert tick_sum(store) == 3 * sum(range(50))
    finally:
        store.close()


def test_a_data_path_holding_none_of_the_lakes_files_is_refused(tmp_path, postgres, caplog):
    """The catalog's own directory, empty (a share not mounted there): refused, rather than new files going
    into the mount point while every read of the lake's files fails."""
    data = tmp_path / "lake"
    store = LakeStore(postgres.url, str(data), CATALOGUE, "a")
    try:
        for seq in range(1, 3):
            assert not store.commit([beats("n1", seq, 50)])[0].error
    finally:
        store.close()
    data.rename(tmp_path / "share")  # unmounted: the mount point is an empty directory
    data.mkdir()
    with pytest.raises(
        LakeError,
        match=r"none of the 2 of its newest and oldest files looked for is there \(no .*\.parquet\): is",
    ):
        LakeStore(postgres.url, str(data), CATALOGUE, "a")
    assert not parquet_under(data)
    data.rmdir()
    (tmp_path / "share").rename(data)  # mounted again
    store = LakeStore(postgres.url, str(data), CATALOGUE, "a")
    try:
        assert tick_sum(store) == 2 * sum(range(50))
        for seq in range(3, 7):
            assert not store.commit([beats("n1", seq, 50)])[0].error
    finally:
        store.close()
    # the newest files lost, the oldest there: the storage is mounted; the loss is logged, and it starts
    newest = sorted(data.rglob("*.parquet"), key=lambda f: f.stat().st_mtime_ns)[-3:]
    for f in newest:
        f.unlink()
    with caplog.at_level("ERROR", logger="c4.collector.lake"):
        LakeStore(postgres.url, str(data), CATALOGUE, "a").close()
    lost = {r.getMessage() for r in caplog.records if "a live file of the lake is missing" in r.getMessage()}
    assert any(newest[-1].name in m for m in lost), lost


SECRETS = (
    "s3cret",
    "SECRETq1",
    "SECRETh1",
    "SECRETe1",
    "SECRETe2",
    "SECRETk1",
    "SECRETk2",
    "SECRETk3",
    "SECa",
    "SECb",
)


def test_a_password_in_the_lake_url_is_never_shown(tmp_path):
    assert shown_url("postgres://c4:s3cret@db:5432/lake") == "postgres://c4:***@db:5432/lake"
    assert (
        shown_url("postgresql://c4:p%40ss@db/lake?sslmode=require")
        == "postgresql://c4:***@db/lake?sslmode=require"
    )
    assert shown_url("postgres://c4@db/lake") == "postgres://c4@db/lake"
    assert shown_url("postgres://c4:a@b@db/lake") == "postgres://c4:***@db/lake"  # an unencoded '@'
    assert shown_url("postgres://c4@db/lake?password=SECRETq1&sslmode=require") == (
        "postgres://c4@db/lake?password=***&sslmode=require"
    )
    assert shown_url("host=db dbname=lake password=s3cret") == "host=db dbname=lake password=***"
    assert shown_url("host=db password = SECRETk1 dbname=lake") == "host=db password = *** dbname=lake"
    assert shown_url("host=db password='SECRETk2 SECRETk3' dbname=lake") == "host=db password=*** dbname=lake"
    assert shown_url("mysql://u:s3cret@x/y") == "mysql://u:***@x/y"
    # libpq reads these as passwords too (a percent-encoded key, '&' in a key=value value, a space)
    assert shown_url("postgres://c4@h/lake?pass%77ord=SECe") == "postgres://c4@h/lake?pass%77ord=***"
    assert shown_url("postgres://c4@h/lake?password=SECc SECd&sslmode=require") == (
        "postgres://c4@h/lake?password=***&sslmode=require"
    )
    assert "SECb" not in shown_url("host=h dbname=lake password=SECa&SECb")
    assert "SECb" not in shown_url('host=h dbname=lake password="SECa SECb"')  # not libpq's quoting: unread
    assert shown_url("postgres://c4:SECRETh1/x@h/lake") == "postgres://c4:***@h/lake"
    # as libpq reads it: a password with a space or a quote is quoted, not split into another item
    info, password = without_password(conninfo("postgres://c4:SECRETe1%20SECRETe2@db/lake"))
    assert password == "SECRETe1 SECRETe2" and "SECRET" not in info and "dbname=lake" in info
    info, password = without_password("host=db password='SECRETk2 SECRETk3' dbname=lake")
    assert password == "SECRETk2 SECRETk3" and "SECRET" not in info
    env = os.environ.get("PGPASSWORD")
    try:  # each refused: the message names the URL, never its password
        for url in (
            "postgres://c4:s3cret@127.0.0.1:1/lake",
            "postgres://c4@127.0.0.1:1/lake?password=SECRETq1",
            "postgres://c4:SECRETh1#x@127.0.0.1:1/lake",
            "postgres://c4:SECRETh1/x@127.0.0.1:1/lake",
            "postgres://c4:SECRETe1%20SECRETe2@127.0.0.1:1/lake",
            "host=127.0.0.1 port=1 dbname=lake password = SECRETk1",
            "host=127.0.0.1 port=1 dbname=lake password='SECRETk2 SECRETk3'",
            "host=127.0.0.1 port=1 dbname=lake password=SECa&SECb",
            'host=127.0.0.1 port=1 dbname=lake password="SECa SECb"',
            "postgres://c4@127.0.0.1:1/lake?pass%77ord=SECRETq1",
            "mysql://u:s3cret@x/y",
        ):
            with pytest.raises(LakeError) as refused:
                LakeStore(url, str(tmp_path / "lake"), CATALOGUE, "a")
            text = str(refused.value)
            assert not any(secret in text for secret in SECRETS), (url, text)
    finally:  # attaching puts the URL's password into PGPASSWORD for libpq
        if env is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = env
