"""Scale-out: two collectors write their shards into one DuckLake (catalog in a real PostgreSQL).

Agents pick their home collector by hashing their node name and fail over to the next one; a
collector killed with SIGKILL loses and duplicates nothing, and queries on either collector see
every shard.
"""

from __future__ import annotations

import pytest
from test_e2e import FAST_AGENT, assert_exactly_once, heartbeat_ticks, scalar
from testkit.procs import AgentProc, CollectorProc
from testkit.wait import wait_for

from c4.shard import ordered_collectors


def lake_collector(tmp_path, pg, name, data):
    (tmp_path / name).mkdir(exist_ok=True)
    return CollectorProc(
        tmp_path / name,
        extra=["--lake", pg.url, "--lake-data-path", str(data), "--shard", name],
        ready_timeout_s=90,  # attaching the lake takes tens of seconds on a loaded 2-core host
    ).start()


def test_two_shards_one_lake_failover_exactly_once(tmp_path, postgres):
    data = tmp_path / "lake-data"
    a = lake_collector(tmp_path, postgres, "a", data)
    b = lake_collector(tmp_path, postgres, "b", data)
    both = f"{a.address},{b.address}"
    # the ports are random, so pick names homed three on each shard (the spread itself is tested below)
    home_of = {f"node{i}": ordered_collectors(f"node{i}", [a.address, b.address])[0] for i in range(64)}
    nodes = [n for n in home_of if home_of[n] == a.address][:3] + [
        n for n in home_of if home_of[n] == b.address
    ][:3]
    homes = {n: home_of[n] for n in nodes}
    assert len(nodes) == 6 and set(homes.values()) == {a.address, b.address}
    agents = [
        AgentProc(tmp_path, both, n, ["--samplers", "heartbeat"], env=FAST_AGENT).start() for n in nodes
    ]
    try:
        for n in nodes:  # every agent reached its home shard; both collectors see every shard's rows
            wait_for(
                lambda n=n: (
                    scalar(b.address, f"SELECT count(*) FROM agent_heartbeat WHERE node = '{n}'") >= 10
                )
            )
        assert scalar(a.address, "SELECT count(DISTINCT node) FROM agent_heartbeat") == len(nodes)
        a.kill9()
        on_a = [n for n in nodes if homes[n] == a.address]
        before = {
            n: scalar(b.address, f"SELECT max(tick) FROM agent_heartbeat WHERE node = '{n}'") for n in on_a
        }
        for n in on_a:  # they fail over to b and go on
            wait_for(
                lambda n=n: (
                    scalar(b.address, f"SELECT max(tick) FROM agent_heartbeat WHERE node = '{n}'")
                    > before[n] + 20
                ),
                what=f"{n} failing over",
            )
    finally:
        for ag in agents:
            assert ag.stop() == 0
    for ag in agents:
        assert not list(ag.spool.glob("*.seg")), "an agent exited with unacknowledged batches"
    for n in nodes:
        assert_exactly_once(heartbeat_ticks(b.address, n))
    counted = scalar(
        b.address, "SELECT count(*) FROM (SELECT DISTINCT node, boot_ns, tick FROM agent_heartbeat)"
    )
    assert scalar(b.address, "SELECT count(*) FROM agent_heartbeat") == counted  # no copies across shards
    assert "lake" in b.log() and "shard b" in b.log()
    b.stop()
    # a restarted collector of shard a sees the whole lake again
    a2 = CollectorProc(
        tmp_path / "a",
        port=a.port,
        extra=["--lake", postgres.url, "--lake-data-path", str(data), "--shard", "a"],
        ready_timeout_s=90,
    ).start()
    try:
        assert scalar(a2.address, "SELECT count(*) FROM agent_heartbeat") == counted
    finally:
        a2.stop()


def test_a_second_collector_of_a_served_shard_is_refused(tmp_path, postgres):
    """Two collectors of one shard would append to one sequence table and each prune it: the second is
    refused at start, naming the shard; once the first has stopped, the shard starts again."""
    import subprocess
    import sys

    data = tmp_path / "lake-data"
    a = lake_collector(tmp_path, postgres, "a", data)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "c4.cli", "collector", "--db", str(tmp_path / "b.duckdb"),
             "--listen", "127.0.0.1:0", "--lake", postgres.url, "--lake-data-path", str(data), "--shard", "a"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 1, out.stderr[-2000:]
        assert "shard 'a' of the lake is served by another collector" in out.stderr
        assert "--shard" in out.stderr
    finally:
        a.stop()
    again = lake_collector(tmp_path, postgres, "a", data)  # a stopped collector's shard is free at once
    again.stop()


def test_bad_lake_url_is_refused_clearly(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "c4.cli",
            "collector",
            "--lake",
            "mysql://x/y",
            "--lake-data-path",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "expected postgres://" in out.stderr


def test_home_collector_is_stable_and_moves_only_its_nodes():
    from c4.shard import parse_collectors

    three = parse_collectors("c1:1, c2:2,c3:3,c2:2")
    assert three == ["c1:1", "c2:2", "c3:3"]
    nodes = [f"gpu-node-{i}" for i in range(300)]
    home3 = {n: ordered_collectors(n, three)[0] for n in nodes}
    assert all(ordered_collectors(n, list(reversed(three)))[0] == home3[n] for n in nodes)  # order-free
    shares = [sum(h == c for h in home3.values()) for c in three]
    assert min(shares) > 60, shares  # spread
    home2 = {n: ordered_collectors(n, ["c1:1", "c2:2"])[0] for n in nodes}
    moved = [n for n in nodes if home2[n] != home3[n]]
    assert moved and all(home3[n] == "c3:3" for n in moved)  # dropping c3 moves only c3's nodes


def test_lake_url_to_conninfo():
    from psycopg.conninfo import conninfo_to_dict

    from c4.collector.lake import LakeError, conninfo

    assert conninfo_to_dict(conninfo("postgres://c4:p%40ss@db.example:5433/lake?sslmode=require")) == {
        "host": "db.example",
        "port": "5433",
        "user": "c4",
        "password": "p@ss",
        "dbname": "lake",
        "sslmode": "require",
    }
    assert conninfo_to_dict(conninfo("host=x dbname=y")) == {"host": "x", "dbname": "y"}
    # as libpq reads URLs: several hosts, a socket directory as host, a '#' in the password
    assert conninfo_to_dict(conninfo("postgresql://c4@h1:5432,h2:5433/lake")) == {
        "user": "c4",
        "dbname": "lake",
        "host": "h1,h2",
        "port": "5432,5433",
    }
    assert (
        conninfo_to_dict(conninfo("postgresql://c4@%2Fvar%2Frun%2Fpostgresql/lake"))["host"]
        == "/var/run/postgresql"
    )
    assert conninfo_to_dict(conninfo("postgres://c4:a#b@h/lake"))["password"] == "a#b"
    with pytest.raises(LakeError, match="expected postgres://"):
        conninfo("mysql://u@x/y")
    with pytest.raises(LakeError, match="names no database"):
        conninfo("postgres://c4@host:1/")


def test_lake_sequence_rows_are_appended_and_pruned_by_retention(tmp_path, postgres):
    from datetime import datetime

    import pyarrow as pa

    from c4.catalogue import load
    from c4.collector.lake import LakeStore
    from c4.collector.store import PendingBatch

    catalogue = load()
    spec = catalogue["agent_heartbeat"]
    store = LakeStore(postgres.url, str(tmp_path / "lake-data"), catalogue, "solo")
    try:

        def beat(agent: str, seq: int) -> PendingBatch:
            row = {c: None for c in spec.column_names}
            row.update(node=agent, agent_id=agent)
            return PendingBatch(agent, seq, spec, pa.Table.from_pylist([row], schema=spec.arrow_schema))

        for seq in range(1, 4):  # three commits per agent: three bookkeeping rows each, no deletes
            assert [r.rows for r in store.commit([beat("n1", seq), beat("n2", seq)])] == [1, 1]
        # the lake's tables are appended by position too (their stored columns are the catalogue's)
        assert store._table_columns(spec.name, side=False) == spec.column_names
        table = store.seq_table
        assert store.con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 6
        assert store.commit([beat("n1", 2)])[0].duplicate
        assert store.delete_older_than("TIMESTAMP '2000-01-01'") == {}  # the bookkeeping is not data
        assert store.prune_seqs() == 4
        rows = store.con.execute(f"SELECT agent_id, last_seq FROM {table} ORDER BY 1").fetchall()
        assert rows == [("n1", 3), ("n2", 3)]
    finally:
        store.close()
    reopened = LakeStore(postgres.url, str(tmp_path / "lake-data"), catalogue, "solo")
    try:
        assert reopened.known_seq("n1") == 3 and reopened.known_seq("n2") == 3
        # n1 declares its spool epoch (adopted), then a new spool starts its sequence over
        assert reopened.open_agent("n1", 5) == 3 and reopened.open_agent("n1", 6) == 0
        assert reopened.commit([beat("n1", 1)])[0].rows == 1
    finally:
        reopened.close()
    # another shard (the agent failed over) finds the new epoch's sequence, not the old higher one
    other = LakeStore(postgres.url, str(tmp_path / "lake-data"), catalogue, "other")
    try:
        assert other.open_agent("n1", 6) == 1 and other.known_seq("n2") == 3
    finally:
        other.close()
    # a shard whose Hello records the epoch with its nodes row looks the agent up across shards first
    third = LakeStore(postgres.url, str(tmp_path / "lake-data"), catalogue, "third")
    try:
        row = {c: "" for c in ("node", "job", "agent_id", "agent_version", "gpus_json", "nics_json")}
        row.update(ts=datetime(2026, 1, 1), node="n1", agent_id="n1", gpu_count=0, nic_port_count=0)
        row["labels_json"] = "{}"
        nodes = PendingBatch.internal(catalogue["nodes"], [row], opens=(("n1", 6),))
        assert third.commit([nodes])[0].rows == 1
        assert third.open_agent("n1", 6) == 1  # not 0: the sequence the other shard committed
    finally:
        third.close()
