"""Fault lifecycle and the in-collector runner: one fault per component across runs, resolved when gone."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime

from testkit.procs import CollectorProc, run_sim

from c4.analytics.findings import Finding
from c4.analytics.lifecycle import FaultBook
from c4.query import query_arrow


def finding(component="host1/mlx5_2p1", t=0):
    ts = datetime(2026, 1, 1, 0, 0, t)
    return Finding(
        "nic_rate", "hardware", "nic_port", component, "host1", ts, ts, 0.9, "replace_cable", "slow"
    )


def test_redetection_updates_one_fault_and_absence_resolves_it():
    book = FaultBook(resolve_after_runs=2)
    now = datetime(2026, 1, 1, 0, 1)
    first = book.update([finding(t=0)], now)
    again = book.update([finding(t=5)], now)
    assert first[0]["fault_id"] == again[0]["fault_id"] and again[0]["first_seen"] == first[0]["first_seen"]
    assert again[0]["state"] == "open" and len(book.open) == 1
    assert book.update([], now) == []  # missed once: still open
    gone = book.update([], now)
    assert [r["state"] for r in gone] == ["resolved"] and not book.open


def test_a_hang_stays_open_while_its_job_makes_no_progress_and_resolves_once_it_does():
    """A hung job's last collective leaves the window, so the hang detector sees nothing: not the end
    of the hang. It resolves only after the job completes a collective again (e.g. relaunched)."""
    import polars as pl

    from c4.analytics.hang import silent_hangs

    stopped = datetime(2026, 1, 1, 0, 0, 10)
    hang = Finding(
        "hang_non_comm",
        "non_comm_hang",
        "gpu",
        "host1/gpu3",
        "host1",
        stopped,
        stopped,
        0.85,
        "restart_job",
        "hung",
        job="train",
    )
    other = finding()
    book = FaultBook(resolve_after_runs=1)
    now = datetime(2026, 1, 1, 0, 5)
    book.update([hang, other], now)
    nothing = pl.DataFrame(
        {"ts": [datetime(2026, 1, 1, 0, 0, 5)], "job": ["train"], "comm_id": ["c"], "hostname": ["host1"]}
    )
    held = silent_hangs(list(book.open.values()), nothing)
    assert held == {hang.fault_id}
    gone = book.update([], now, held)
    assert [r["fault_id"] for r in gone] == [other.fault_id]  # the NIC fault resolves, the hang does not
    assert silent_hangs(list(book.open.values()), pl.DataFrame()) == {hang.fault_id}  # an empty window too
    relaunched = nothing.with_columns(pl.lit(datetime(2026, 1, 1, 0, 4)).alias("ts"))
    held = silent_hangs(list(book.open.values()), relaunched)
    assert held == set()
    assert [r["state"] for r in book.update([], now, held)] == ["resolved"]


def test_operator_acknowledges_and_resolves():
    import pytest

    from c4.analytics.lifecycle import FaultStateError

    book = FaultBook()
    now = datetime(2026, 1, 1, 0, 1)
    [row] = book.update([finding()], now)
    acked = book.set_state(row["fault_id"], "acknowledged", now, None)
    assert acked["state"] == "acknowledged"
    assert book.update([finding(t=9)], now)[0]["state"] == "acknowledged"  # re-detection keeps the ack
    done = book.set_state(row["fault_id"], "resolved", now, None)
    assert done["state"] == "resolved" and not book.open
    with pytest.raises(FaultStateError, match="already resolved"):
        book.set_state(row["fault_id"], "acknowledged", now, done)
    with pytest.raises(FaultStateError, match="no fault"):
        book.set_state("nope:x", "resolved", now, None)
    with pytest.raises(FaultStateError, match="state must be"):
        book.set_state(row["fault_id"], "closed", now, None)
    assert book.update([finding(t=20)], now)[0]["state"] == "open"  # the signal persists: open again


def test_collector_runs_the_diagnosis_on_simulated_faults(tmp_path):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    posts = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[collector]\ndiagnose_interval_s = 1.0\ndiagnose_window_s = 60\n"
        f'alert_webhook_urls = ["http://127.0.0.1:{srv.server_address[1]}/c4"]\n'
        'isolation_command = "scontrol update NodeName={node} State=DRAIN Reason={reason}"\n'
    )
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "name: e2e\ncluster: {nodes: 4, gpus: 8, nics: 8, leaves: 2, spines: 2, seed: 3}\n"
        "faults:\n  - {kind: nic_degraded, at_s: 4, duration_s: 100, node: host1, nic: 2}\n"
        "  - {kind: xid, at_s: 4, node: host2, gpu: 3, xid: 48}\n"
    )
    col = CollectorProc(tmp_path, extra=["--config", str(cfg)]).start()
    try:
        run_sim(col.address, scenario, tmp_path / "sim", 40, speed=5, timeout_s=180)
        deadline = time.monotonic() + 30
        got = set()
        while time.monotonic() < deadline:
            t, _ = query_arrow(
                col.address, "SELECT DISTINCT component, fault_class FROM faults WHERE state = 'open'"
            )
            got = {(r["component"], r["fault_class"]) for r in t.to_pylist()}
            if {("host1/mlx5_2p1", "hardware"), ("host2/gpu3", "hardware")} <= got:
                break
            time.sleep(1)
        assert {("host1/mlx5_2p1", "hardware"), ("host2/gpu3", "hardware")} <= got, got
        ids, _ = query_arrow(
            col.address, "SELECT count(DISTINCT fault_id) AS n, count(*) AS rows FROM faults"
        )
        row = ids.to_pylist()[0]
        assert row["rows"] > row["n"]  # re-detections appended updates of the same faults, not new ones
        acts, _ = query_arrow(col.address, "SELECT sink, outcome, fault_id FROM actions")
        acts = acts.to_pylist()
        assert {"webhook", "isolation"} <= {a["sink"] for a in acts}
        assert all(a["outcome"] in ("sent", "dry_run") for a in acts)
        assert any(p["component"] == "host2/gpu3" and p["state"] == "open" for p in posts)
        assert len({p["fault_id"] for p in posts if p["state"] == "open"}) == len(
            [p for p in posts if p["state"] == "open"]
        )  # each fault announced once
        # an operator acknowledges one fault and resolves another from outside (UpdateFault RPC, c4 faults)
        c4 = [sys.executable, "-m", "c4.cli", "faults", "--collector", col.address]
        listed = subprocess.run([*c4, "list", "--json"], capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        ids = {
            json.loads(line)["component"]: json.loads(line)["fault_id"] for line in listed.stdout.splitlines()
        }
        xid_id = ids["host2/gpu3"]
        ack = subprocess.run(
            [*c4, "ack", xid_id, "--note", "RMA ticket 42"], capture_output=True, text=True, timeout=60
        )
        assert ack.returncode == 0 and "-> acknowledged" in ack.stdout, ack.stderr
        time.sleep(2.5)  # diagnosis runs again and re-detects it: the ack must stick
        t, _ = query_arrow(
            col.address, f"SELECT state FROM faults WHERE fault_id = '{xid_id}' ORDER BY ts DESC LIMIT 1"
        )
        assert t.to_pylist() == [{"state": "acknowledged"}]
        nic_id = next(v for k, v in ids.items() if k == "host1/mlx5_2p1")
        res = subprocess.run(
            [*c4, "resolve", nic_id, "--by", "ops"], capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0 and "-> resolved" in res.stdout, res.stderr
        t, _ = query_arrow(
            col.address,
            "SELECT target, detail FROM actions WHERE sink = 'operator' AND fault_state = 'acknowledged'",
        )
        assert t.to_pylist()[0]["detail"] == "RMA ticket 42"
        t, _ = query_arrow(
            col.address,
            f"SELECT count(*) AS n FROM faults WHERE fault_id = '{nic_id}' AND state = 'resolved'",
        )
        assert t.to_pylist()[0]["n"] >= 1
        deadline = time.monotonic() + 10
        while not any(p["fault_id"] == nic_id and p["state"] == "resolved" for p in posts):
            assert time.monotonic() < deadline, "resolution not announced"
            time.sleep(0.2)
        bad = subprocess.run([*c4, "ack", "nope:host9/gpu0"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "no fault with id" in bad.stderr
    finally:
        col.stop()
        srv.shutdown()


def test_stored_operator_rows_from_another_collector_are_taken_in():
    """An acknowledge stays through re-detections; a resolve drops the fault (a new signal re-opens it)."""
    book = FaultBook()
    now = datetime(2026, 1, 1, 0, 1)
    (row,) = book.update([finding()], now)
    other = finding("host1/mlx5_3p1")
    (row2,) = book.update([other], now)
    later = datetime(2026, 1, 1, 0, 2)
    book.take_stored(
        [{**row, "ts": later, "state": "acknowledged"}, {**row2, "ts": later, "state": "resolved"}]
    )
    assert book.open[row["fault_id"]]["state"] == "acknowledged" and row2["fault_id"] not in book.open
    again = {r["fault_id"]: r["state"] for r in book.update([finding(), other], later)}
    assert again == {row["fault_id"]: "acknowledged", row2["fault_id"]: "open"}
