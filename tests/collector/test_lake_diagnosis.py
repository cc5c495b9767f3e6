"""One diagnosis per lake: two real collectors on one DuckLake (catalog in a real PostgreSQL) raise,
alert and isolate a fault once; the leader's kill -9 hands the lease to the other, which re-detects
the fault without alerting or isolating it again, and takes in an acknowledge sent through a follower.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_remediation_e2e import XID_FAULT, script
from testkit.procs import CollectorProc, Proc, free_port, run_sim, wait_healthy
from testkit.wait import wait_for

from c4.faults import update_fault
from c4.query import query_arrow

PERIOD_S = 1.0


class Alerts(BaseHTTPRequestHandler):
    """A webhook sink on loopback: keeps every POSTed fault (fault_id, state)."""

    got: list[tuple[str, str]] = []
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.got.append((body["fault_id"], body["state"]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def alerts():
    Alerts.got = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Alerts)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def leader_metric(port: int) -> tuple[float, str]:
    """c4_diagnosis_leader of the collector whose /metrics is on ``port``: (value, the leader's shard);
    (-1, '') when the scrape does not answer in time (a loaded host), so that callers poll again."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            text = r.read().decode()
    except TimeoutError:
        return -1.0, ""
    for fam in text_string_to_metric_families(text):
        if fam.name == "c4_diagnosis_leader":
            sample = fam.samples[0]
            return sample.value, sample.labels["leader"]
    raise AssertionError("no c4_diagnosis_leader on /metrics")


def scalar(address: str, sql: str):
    t, _ = query_arrow(address, sql)
    return t.column(0)[0].as_py()


def test_one_fault_one_alert_one_isolation_and_takeover_without_realert(tmp_path, postgres, alerts):
    drain = script(tmp_path, "drain.sh")
    data = tmp_path / "lake-data"
    metrics = {"a": free_port(), "b": free_port()}

    def collector(name: str, port: int | None = None) -> CollectorProc:
        """Collector ``name`` on the lake, launched (not yet waited for)."""
        (tmp_path / name).mkdir(exist_ok=True)
        cfg = tmp_path / name / "c4.toml"
        cfg.write_text(
            f"[collector]\ndiagnose_interval_s = {PERIOD_S}\ndiagnose_window_s = 600\n"
            f'alert_webhook_urls = ["http://127.0.0.1:{alerts.server_address[1]}/c4"]\n'
            f'isolation_command = "{drain} {{node}} {{reason}}"\nisolation_dry_run = false\n'
            f'metrics_listen = "127.0.0.1:{metrics[name]}"\n'
        )
        extra = ["--config", str(cfg), "--lake", postgres.url, "--lake-data-path", str(data), "--shard", name]
        proc = CollectorProc(tmp_path / name, port=port, extra=extra)
        Proc.start(proc)  # both boot at once; wait_healthy below
        return proc

    def calls() -> list[str]:
        path = tmp_path / "calls.txt"
        return path.read_text().splitlines() if path.exists() else []

    def fault_rows(address: str, where: str = "") -> int:
        return scalar(address, f"SELECT count(*) FROM faults WHERE fault_id = '{XID_FAULT}' {where}")

    procs = {}
    try:
        for name in ("a", "b"):  # one after the other: each builds or checks the lake's schema alone
            procs[name] = collector(name)
            wait_healthy(procs[name].address, timeout_s=90)
        # exactly one of them took the lease, and the other names it
        leader_name = wait_for(
            lambda: next((n for n in procs if leader_metric(metrics[n])[0] == 1.0), None), what="a leader"
        )
        follower_name = "b" if leader_name == "a" else "a"
        leader, follower = procs[leader_name], procs[follower_name]
        wait_for(lambda: leader_metric(metrics[follower_name]) == (0.0, leader_name), what="a follower")
        assert wait_for(lambda: leader_metric(metrics[leader_name]) == (1.0, leader_name), what="the leader")
        scenario = tmp_path / "s.yaml"
        scenario.write_text(
            "name: lake\ncluster: {nodes: 4, gpus: 8, nics: 8, leaves: 2, spines: 2, seed: 3}\n"
            "faults:\n  - {kind: xid, at_s: 4, node: host2, gpu: 3, xid: 48}\n"
        )
        # the agents report to the follower; the leader diagnoses the whole lake
        run_sim(follower.address, scenario, tmp_path / "sim", 15, timeout_s=120)
        try:
            wait_for(lambda: Alerts.got and calls(), timeout_s=90, what="the Xid's alert and isolation")
        except AssertionError:
            events = scalar(follower.address, "SELECT count(*) FROM gpu_events")
            raise AssertionError(
                f"no alert or isolation: alerts {Alerts.got}, isolations {calls()}, {events} gpu_events rows; "
                f"leader log:\n{leader.log()[-3000:]}"
            ) from None
        rows = fault_rows(follower.address)
        wait_for(lambda: fault_rows(follower.address) >= rows + 2, what="two more passes")
        # both collectors went on: neither raised, alerted or isolated it again
        assert scalar(follower.address, "SELECT count(DISTINCT fault_id) FROM faults") == 1
        assert scalar(follower.address, "SELECT any_value(fault_id) FROM faults") == XID_FAULT
        assert Alerts.got == [(XID_FAULT, "open")]
        assert calls() == [f"drain.sh host2 C4:{XID_FAULT}"]
        rows = fault_rows(follower.address)

        leader.kill9()
        killed = time.monotonic()
        restarted = collector(leader_name, port=leader.port)  # boots while the follower takes over
        wait_for(
            lambda: leader_metric(metrics[follower_name]) == (1.0, follower_name),
            timeout_s=60,
            what="the follower taking over",
        )
        took_over_s = time.monotonic() - killed
        assert f"diagnosis leader now shard={follower_name}" in follower.log()
        leader, follower = follower, restarted
        procs[leader_name] = restarted
        # the new leader re-detects the still open fault in its passes...
        wait_for(lambda: fault_rows(leader.address) >= rows + 2, what="the new leader's passes")
        # ...and neither alerts nor isolates it again: the lake said both were done
        assert Alerts.got == [(XID_FAULT, "open")]
        assert calls() == [f"drain.sh host2 C4:{XID_FAULT}"]
        assert scalar(leader.address, "SELECT count(*) FROM actions WHERE sink = 'isolation'") == 1
        assert scalar(leader.address, "SELECT count(*) FROM actions WHERE sink = 'webhook'") == 1

        # the killed collector came back as a follower; an acknowledge sent through it applies
        wait_healthy(follower.address, timeout_s=90)
        wait_for(lambda: leader_metric(metrics[leader_name]) == (0.0, follower_name), what="a new follower")
        assert update_fault(follower.address, XID_FAULT, "acknowledged", by="ops") == ("open", "acknowledged")
        acked = scalar(follower.address, f"SELECT max(ts) FROM faults WHERE fault_id = '{XID_FAULT}'")
        # a pass already running when the ack landed may store one more open row; every pass after
        # the leader took the ack in keeps it acknowledged
        taken = f"AND ts > '{acked}' AND state = 'acknowledged'"
        wait_for(
            lambda: fault_rows(leader.address, taken) >= 3,
            timeout_s=60,
            what="the leader's passes after the ack",
        )
        first = scalar(leader.address, f"SELECT min(ts) FROM faults WHERE fault_id = '{XID_FAULT}' {taken}")
        reopened = fault_rows(leader.address, f"AND ts > '{first}' AND state <> 'acknowledged'")
        assert reopened == 0, "the leader re-opened a fault acknowledged through another collector"
        assert scalar(leader.address, "SELECT state FROM faults_current") == "acknowledged"
        assert Alerts.got == [(XID_FAULT, "open")]
        print(f"takeover after kill -9: {took_over_s:.1f} s (diagnosis period {PERIOD_S} s)")
    except AssertionError:
        for name, proc in procs.items():  # shown with the failure
            print(f"--- collector {name}:\n{proc.log()[-4000:]}")
        raise
    finally:
        for proc in procs.values():
            if proc.p is not None and proc.p.poll() is None:
                proc.stop()


def test_lease_is_one_holders_and_a_silent_holder_loses_it(postgres):
    from c4.collector.lake import conninfo
    from c4.collector.lease import PostgresLease

    a = PostgresLease(conninfo(postgres.url), "a", timeout_s=1.0)
    b = PostgresLease(conninfo(postgres.url), "b", timeout_s=1.0)
    try:
        assert a.hold() and not b.hold()
        assert a.holder() == b.holder() == "a"
        assert a.hold() and not b.hold()  # renewed: still a's
        # a stops renewing (hung): the server ends its session after the timeout, b takes over
        wait_for(lambda: b.hold(), timeout_s=20, poll_s=0.3, what="b taking a silent holder's lease")
        assert b.holder() == "b"
        assert not a.hold(), "a holder whose session ended must know it no longer leads"
        b.release()
        assert a.hold() and a.holder() == "a"  # released on a clean stop: free at once
    finally:
        a.release()
        b.release()


def test_lease_on_an_unreachable_catalog_is_not_held():
    from c4.collector.lease import PostgresLease

    lease = PostgresLease(f"host=127.0.0.1 port={free_port()} dbname=lake user=c4", "a", timeout_s=1.0)
    assert not lease.hold() and lease.holder() == ""


def test_each_lake_collector_records_its_flush_advice_and_the_longest_fresh_one_counts(postgres):
    """Collectors of one lake record how far behind their agents' data may be (their flush advice) in
    the catalog database; the leader's diagnosis looks as far back as the longest recent record, not
    always as far as any collector might advise; a collector that stopped recording is forgotten."""
    from c4.collector.lake import conninfo
    from c4.collector.lease import PostgresLease

    a = PostgresLease(conninfo(postgres.url), "a", timeout_s=30.0)
    b = PostgresLease(conninfo(postgres.url), "b", timeout_s=30.0)
    try:
        assert a.hold() and not b.hold()
        assert a.lake_lag_s(30.0) is None  # nothing recorded yet, not even the table: unknown
        a.report_lag(0.0)
        assert a.lake_lag_s(30.0) == 0.0  # nobody advises: no lag beyond the configured one
        b.report_lag(5.0)  # b's agents were asked to flush every 5 s
        assert a.lake_lag_s(30.0) == 5.0
        b.report_lag(2.0)  # b stepped down
        a.report_lag(1.0)
        assert a.lake_lag_s(30.0) == 2.0
        time.sleep(1.2)
        a.report_lag(1.0)  # a goes on recording, b stopped (say it died)
        assert a.lake_lag_s(1.0) == 1.0
    finally:
        a.release()
        b.release()
    down = PostgresLease(f"host=127.0.0.1 port={free_port()} dbname=lake user=c4", "c", timeout_s=1.0)
    down.report_lag(5.0)  # no session: nothing recorded, nothing raised
    assert down.lake_lag_s(30.0) is None


def test_a_lake_leaders_diagnosis_lags_as_far_as_the_lakes_advice_and_no_further(postgres, tmp_path):
    """Two real collectors on one lake, each with its flush advisor: while neither advises, the leader's
    diagnosis reads up to the clock (before, a lake always lagged the longest advice, 5 s); once the
    follower's advisor asks its agents for 5 s, the leader lags 5 s too."""
    import asyncio

    from testkit.inprocess_collector import RunningCollector

    def lake_collector(shard: str) -> RunningCollector:
        return RunningCollector(
            tmp_path,
            lake=postgres.url,
            lake_data_path=str(tmp_path / "lake"),
            shard=shard,
            diagnose_interval_s=3600,  # the test runs the lease rounds itself
        )

    one, two = lake_collector("one"), lake_collector("two")
    try:

        def lead(col) -> bool:
            return asyncio.run_coroutine_threadsafe(col.collector.diagnosis.lead(), col.loop).result(30)

        leader, follower = (one, two) if lead(one) else (two, one)
        assert not lead(follower)
        assert lead(leader)
        assert leader.collector._advised_lag_s() == 0.0  # nobody advises
        advisor = follower.collector.service.flush_advisor
        for _ in range(100):  # the follower's commits fall behind: its advisor raises
            advisor.observe(1.0)
            time.sleep(0.025)
        assert advisor.advice_s() == 5.0 and leader.collector.service.flush_advisor.advice_s() == 0.0
        assert not lead(follower)  # its lease round records its advice
        assert leader.collector._advised_lag_s() == 5.0
        # a row written by hand (or garbled) in the catalog: bounded by the longest advice there is
        lease = leader.collector.diagnosis.lease
        for hostile, lagged in (
            (1e9, 5.0),
            (float("nan"), 5.0),
            (-3.0, 0.0),
        ):  # -3: the leader's own 0 is longer
            with lease._lock:
                lease._con.execute(
                    "UPDATE c4_flush_advice SET lag_s = %s, updated = now() WHERE shard = %s",
                    (hostile, follower.collector.diagnosis.shard),
                )
            assert leader.collector._advised_lag_s() == lagged, hostile
    finally:
        one.stop()
        two.stop()
