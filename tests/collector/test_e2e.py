"""Agent -> collector -> SQL with real processes on loopback: round trip, crashes, restarts."""

from __future__ import annotations

import csv
import io
import subprocess
import time

import pyarrow.ipc as ipc
import pytest
from testkit.procs import C4, AgentProc, CollectorProc
from testkit.wait import wait_for

from c4.query import query_arrow

FAST_AGENT = {
    "C4_AGENT_INTERVAL_S": "0.02",
    "C4_AGENT_FLUSH_INTERVAL_S": "0.05",
    "C4_AGENT_HEALTH_INTERVAL_S": "0.5",
    "C4_AGENT_BACKOFF_INITIAL_S": "0.05",
    "C4_AGENT_BACKOFF_MAX_S": "0.3",
    # tests assert that a stopped agent left nothing spooled: on a loaded machine 5 s is not always enough
    "C4_AGENT_DRAIN_TIMEOUT_S": "60",
}


def scalar(address: str, sql: str):
    table, _ = query_arrow(address, sql)
    return table.column(0)[0].as_py()


def heartbeat_ticks(address: str, node: str) -> list[tuple[int, int, int]]:
    """(boot_ns, tick, copies) for every stored heartbeat of a node."""
    t, _ = query_arrow(
        address,
        f"SELECT boot_ns, tick, count(*) AS n FROM agent_heartbeat WHERE node = '{node}' GROUP BY ALL ORDER BY ALL",
    )
    return list(zip(*(t.column(i).to_pylist() for i in range(3)), strict=True))


def assert_exactly_once(ticks: list[tuple[int, int, int]]) -> dict[int, int]:
    """Each boot's ticks are 1..max with no hole and no copy; returns boot -> max tick."""
    by_boot: dict[int, list[int]] = {}
    for boot, tick, n in ticks:
        assert n == 1, f"tick {tick} of boot {boot} stored {n} times"
        by_boot.setdefault(boot, []).append(tick)
    for boot, seen in by_boot.items():
        assert seen == list(range(1, len(seen) + 1)), f"boot {boot}: ticks have holes"
    return {b: len(s) for b, s in by_boot.items()}


def test_round_trip_agent_collector_sql(tmp_path):
    col = CollectorProc(tmp_path).start()
    agent = AgentProc(tmp_path, col.address, "node-a", ["--job", "job-7"], env=FAST_AGENT).start()
    try:
        wait_for(
            lambda: scalar(col.address, "SELECT count(*) FROM host_memory WHERE node='node-a'") >= 3,
            what="host rows",
        )
        out = subprocess.run(
            C4
            + [
                "sql",
                "--collector",
                col.address,
                "--format",
                "csv",
                "SELECT node, job, count(*) AS n, min(mem_total_bytes) > 0 AS mem_ok FROM host_memory GROUP BY ALL",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        rows = list(csv.DictReader(io.StringIO(out)))
        assert rows and rows[0]["node"] == "node-a" and rows[0]["job"] == "job-7"
        assert rows[0]["mem_ok"] == "true" and int(rows[0]["n"]) >= 3
        # the inventory of the Hello landed in nodes, and the agent reports its own health
        assert scalar(col.address, "SELECT count(*) FROM nodes WHERE agent_id='node-a'") >= 1
        wait_for(
            lambda: scalar(col.address, "SELECT max(batches_acked) FROM agent_health") or 0, what="health"
        )
        # table output is human readable and names the columns
        pretty = subprocess.run(
            C4 + ["sql", "--collector", col.address, "SELECT cpu FROM host_cpu LIMIT 1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "cpu" in pretty
    finally:
        assert agent.stop() == 0
        col.stop()
    # every row acknowledged, nothing left in the spool; and the file opens once the collector is gone
    assert not list(agent.spool.glob("*.seg"))
    import duckdb

    con = duckdb.connect(str(col.db), read_only=True)
    assert con.execute("SELECT count(*) FROM host_memory").fetchone()[0] >= 3


def test_collector_killed_mid_stream_loses_and_duplicates_nothing(tmp_path):
    col = CollectorProc(tmp_path).start()
    agent = AgentProc(tmp_path, col.address, "node-k", ["--samplers", "heartbeat"], env=FAST_AGENT).start()
    try:
        wait_for(lambda: scalar(col.address, "SELECT count(*) FROM agent_heartbeat") >= 20, what="first rows")
        col.kill9()
        time.sleep(1.5)  # the agent keeps sampling into its spool meanwhile
        col = CollectorProc(tmp_path, port=col.port).start()
        wait_for(lambda: scalar(col.address, "SELECT count(*) FROM agent_heartbeat") >= 100, what="catch-up")
    finally:
        assert agent.stop() == 0
    assert not list(agent.spool.glob("*.seg")), "agent exited with unacknowledged batches"
    maxima = assert_exactly_once(heartbeat_ticks(col.address, "node-k"))
    assert len(maxima) == 1 and next(iter(maxima.values())) >= 100
    col.stop()


def _spooled_ticks(spool_dir) -> set[int]:
    from c4.agent.spool import Spool

    spool = Spool(spool_dir, 1 << 30)
    ticks: set[int] = set()
    for seq in spool.pending():
        batch = spool.read(seq)
        if batch.table == "agent_heartbeat":
            ticks |= set(ipc.open_stream(batch.payload).read_all().column("tick").to_pylist())
    spool.close()
    return ticks


def test_agent_killed_with_full_spool_then_restarted(tmp_path):
    col = CollectorProc(tmp_path).start()
    agent = AgentProc(tmp_path, col.address, "node-s", ["--samplers", "heartbeat"], env=FAST_AGENT).start()
    wait_for(lambda: scalar(col.address, "SELECT count(*) FROM agent_heartbeat") >= 10, what="first rows")
    col.kill9()
    time.sleep(2.0)  # collector down: the spool fills up
    agent.kill9()
    spooled = _spooled_ticks(agent.spool)
    assert len(spooled) >= 20, "the spool should hold the ticks sampled while the collector was down"
    col = CollectorProc(tmp_path, port=col.port).start()
    agent2 = AgentProc(tmp_path, col.address, "node-s", ["--samplers", "heartbeat"], env=FAST_AGENT).start()
    try:
        wait_for(
            lambda: len({b for b, _, _ in heartbeat_ticks(col.address, "node-s")}) == 2, what="second boot"
        )

        def first_boot_stored() -> set[int]:
            ticks = heartbeat_ticks(col.address, "node-s")
            first = min(b for b, _, _ in ticks)
            return {t for b, t, _ in ticks if b == first}

        wait_for(lambda: spooled <= first_boot_stored(), what="every spooled tick stored")
    finally:
        assert agent2.stop() == 0
    ticks = heartbeat_ticks(col.address, "node-s")
    maxima = assert_exactly_once(ticks)  # the first boot may lose only its unspooled in-memory tail
    first_boot = min(maxima)
    stored_first = {t for b, t, _ in ticks if b == first_boot}
    assert spooled <= stored_first, f"spooled ticks lost: {sorted(spooled - stored_first)[:10]}"
    col.stop()


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_sql_formats(tmp_path, fmt):
    col = CollectorProc(tmp_path).start()
    agent = AgentProc(tmp_path, col.address, "node-f", ["--samplers", "heartbeat"], env=FAST_AGENT).start()
    try:
        wait_for(lambda: scalar(col.address, "SELECT count(*) FROM agent_heartbeat") >= 5, what="rows")
        out = tmp_path / f"out.{fmt}"
        subprocess.run(
            C4
            + [
                "sql",
                "--collector",
                col.address,
                "--format",
                fmt,
                "-o",
                str(out),
                "SELECT tick FROM agent_heartbeat ORDER BY tick LIMIT 5",
            ],
            check=True,
            timeout=60,
        )
        if fmt == "parquet":
            import pyarrow.parquet as pq

            assert pq.read_table(out).column("tick").to_pylist() == [1, 2, 3, 4, 5]
        else:
            import json

            assert [json.loads(line)["tick"] for line in out.read_text().splitlines()] == [1, 2, 3, 4, 5]
    finally:
        agent.stop()
        col.stop()


def test_sql_reports_unreachable_collector(tmp_path):
    from testkit.procs import free_port

    r = subprocess.run(
        C4 + ["sql", "--collector", f"127.0.0.1:{free_port()}", "SELECT 1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "unreachable" in r.stderr
