"""The lake-wide periodic tasks (retention, fabric discovery, rollups, the lake's file upkeep) run on the
lease holder only: two real collectors on one DuckLake with its catalog in a real PostgreSQL; the
leader that loses the lease stops them, the follower that takes the lease starts them."""

from __future__ import annotations

import time
import urllib.request

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from testkit.procs import CollectorProc, Proc, free_port, wait_healthy
from testkit.wait import wait_for

from c4.collector.lake import conninfo
from c4.collector.lease import APP_PREFIX, LOCK_CLASS, LOCK_OBJECT
from c4.query import query_arrow

#: The tasks only the lease holder runs (each every second here; the lake's file upkeep every two).
LEADER_TASKS = ("retention", "fabric_discovery", "rollup", "lake_upkeep")


def ran(counts: dict[str, float], times: int) -> bool:
    """Whether every leader task ran ``times`` times (the slower file upkeep once)."""
    return all(n >= (1 if task == "lake_upkeep" else times) for task, n in counts.items())


def scrape(port: int) -> dict[str, float] | None:
    """From the collector's /metrics: 'leader' (1 or 0) and task_runs:<task>; None if it did not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            text = r.read().decode()
    except (TimeoutError, OSError):
        return None
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "c4_diagnosis_leader":
            out["leader"] = fam.samples[0].value
        elif fam.name == "c4_collector_task_runs":
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[f"task_runs:{s.labels['task']}"] = s.value
    return out


def runs(port: int) -> dict[str, float]:
    """The leader tasks' run counts of one collector (polled until its /metrics answers)."""
    got = wait_for(lambda: scrape(port), timeout_s=60, what="a /metrics answer")
    return {t: got[f"task_runs:{t}"] for t in LEADER_TASKS}


def test_only_the_lease_holder_runs_the_lake_wide_tasks_and_they_follow_the_lease(tmp_path, postgres):
    data = tmp_path / "lake-data"
    metrics = {"a": free_port(), "b": free_port()}
    procs: dict[str, CollectorProc] = {}

    def collector(name: str) -> CollectorProc:
        (tmp_path / name).mkdir(exist_ok=True)
        cfg = tmp_path / name / "c4.toml"
        cfg.write_text(
            "[collector]\ndiagnose_interval_s = 1.0\nlake_lease_timeout_s = 30\n"
            "retention_interval_s = 1.0\nfabric_discovery_interval_s = 1.0\nrollup_interval_s = 1.0\n"
            "lake_upkeep_interval_s = 2.0\nlake_snapshot_keep_s = 1.0\nlake_file_keep_s = 30.0\n"
            "metrics_interval_s = 1.0\n"
            f'metrics_listen = "127.0.0.1:{metrics[name]}"\n'
        )
        extra = ["--config", str(cfg), "--lake", postgres.url, "--lake-data-path", str(data), "--shard", name]
        proc = CollectorProc(tmp_path / name, extra=extra)
        Proc.start(proc)
        wait_healthy(proc.address, timeout_s=90)
        return proc

    try:
        procs["a"] = collector("a")  # first: it takes the lease, the other follows
        wait_for(lambda: (scrape(metrics["a"]) or {}).get("leader") == 1.0, timeout_s=60, what="a leading")
        procs["b"] = collector("b")
        wait_for(lambda: ran(runs(metrics["a"]), 3), timeout_s=90, what="a's leader tasks running")
        assert scrape(metrics["b"])["leader"] == 0.0
        assert runs(metrics["b"]) == dict.fromkeys(LEADER_TASKS, 0.0), "a follower ran a lake-wide task"

        # a loses the lease: its session is ended and the test takes the lock before either collector
        con = psycopg.connect(conninfo(postgres.url), autocommit=True)
        try:

            def take() -> bool:
                con.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
                    (APP_PREFIX + "%",),
                )
                row = con.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, LOCK_OBJECT)).fetchone()
                return bool(row[0])

            wait_for(take, timeout_s=30, poll_s=0.05, what="the test holding the lease")
            wait_for(
                lambda: (scrape(metrics["a"]) or {}).get("leader") == 0.0, timeout_s=60, what="a losing it"
            )
            time.sleep(2.0)  # a pass that was running when the lease went finishes
            stopped = runs(metrics["a"])
            time.sleep(4.0)  # four periods of every leader task
            assert runs(metrics["a"]) == stopped, "a leader that lost the lease went on with lake-wide tasks"
            assert runs(metrics["b"]) == dict.fromkeys(LEADER_TASKS, 0.0)
            assert "leader tasks stopped" in procs["a"].log()

            # a leaves; once the lock is free b takes the lease and starts the tasks
            assert procs["a"].stop() == 0
        finally:
            con.close()
        wait_for(
            lambda: (scrape(metrics["b"]) or {}).get("leader") == 1.0, timeout_s=60, what="b taking over"
        )
        wait_for(lambda: ran(runs(metrics["b"]), 2), timeout_s=90, what="b's leader tasks running")
        assert "leader tasks started" in procs["b"].log()
        # both collectors' own rows in the lake, each under its shard's name (one host runs both)
        table, _ = query_arrow(procs["b"].address, "SELECT DISTINCT node FROM collector_tasks ORDER BY 1")
        assert table.column("node").to_pylist() == ["a", "b"]
    except AssertionError:
        for name, proc in procs.items():
            print(f"--- collector {name}:\n{proc.log()[-4000:]}")
        raise
    finally:
        for proc in procs.values():
            if proc.p is not None and proc.p.poll() is None:
                proc.stop()
