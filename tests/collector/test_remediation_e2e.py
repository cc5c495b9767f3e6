"""A real collector diagnoses a simulated Xid, isolates and restarts the job through real commands, stores the
fault's recovery timeline, exports it in /metrics, and never remediates the fault twice across a restart."""

from __future__ import annotations

import stat
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from testkit.procs import CollectorProc, free_port, run_sim

from c4.query import query_arrow

XID_FAULT = "xid48:host2/gpu3"


def script(path, name: str):
    """A shell script that appends its name and arguments to calls.txt next to it."""
    p = path / name
    p.write_text(f'#!/bin/sh\necho "{name} $@" >> "$(dirname "$0")/calls.txt"\n')
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return p


def stages(address: str) -> dict[str, float]:
    """The Xid fault's timeline: stage -> seconds after onset."""
    t, _ = query_arrow(
        address, f"SELECT stage, since_onset_s FROM fault_timeline WHERE fault_id = '{XID_FAULT}'"
    )
    return {r["stage"]: r["since_onset_s"] for r in t.to_pylist()}


def wait_stages(address: str, wanted: set[str], timeout_s: float = 60.0) -> dict[str, float]:
    """Poll the timeline until it holds ``wanted``."""
    deadline = time.monotonic() + timeout_s
    got: dict[str, float] = {}
    while time.monotonic() < deadline:
        got = stages(address)
        if wanted <= set(got):
            return got
        time.sleep(1)
    raise AssertionError(f"timeline stages {sorted(got)}, wanted {sorted(wanted)}")


def test_xid_is_isolated_restarted_once_and_its_timeline_exported(tmp_path):
    drain, requeue = script(tmp_path, "drain.sh"), script(tmp_path, "requeue.sh")
    metrics_port = free_port()
    cfg = tmp_path / "c4.toml"
    cfg.write_text(
        "[collector]\ndiagnose_interval_s = 1.0\ndiagnose_window_s = 60\n"
        f'isolation_command = "{drain} {{node}} {{reason}}"\nisolation_dry_run = false\n'
        f'restart = "command"\nrestart_command = "{requeue} {{job}} {{fault_id}}"\nrestart_dry_run = false\n'
        f'metrics_listen = "127.0.0.1:{metrics_port}"\n'
    )
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "name: recovery\ncluster: {nodes: 4, gpus: 8, nics: 8, leaves: 2, spines: 2, seed: 3}\n"
        # the job's first collectives come a few seconds into the run (nodes come up first): the Xid
        # waits until C4 has seen enough iterations to learn the job's normal period
        "faults:\n  - {kind: xid, at_s: 14, node: host2, gpu: 3, xid: 48}\n"
        "  - {kind: job_restart, at_s: 26}\n"
    )
    col = CollectorProc(tmp_path, extra=["--config", str(cfg)]).start()
    try:
        # in real time: the agent stamps a kernel-log line when it reads it (wall time) while the twin's
        # collectives carry simulated time; at 5x the Xid landed 4 s of records after the job began, before
        # C4 could learn its period, on an idle host (a loaded one read the line later and passed)
        run_sim(col.address, scenario, tmp_path / "sim", 50, speed=1, timeout_s=240)
        got = wait_stages(col.address, {"onset", "detected", "isolated", "restarted", "recovered"})
        assert 0 <= got["detected"] <= got["isolated"] <= got["restarted"] < got["recovered"], got
        acts, _ = query_arrow(
            col.address, f"SELECT sink, outcome, job FROM actions WHERE fault_id = '{XID_FAULT}' ORDER BY ts"
        )
        assert acts.to_pylist() == [
            {"sink": "isolation", "outcome": "ran", "job": "train"},
            {"sink": "restart", "outcome": "ran", "job": "train"},
        ]
        obs, _ = query_arrow(
            col.address, f"SELECT stage FROM fault_observations WHERE fault_id = '{XID_FAULT}'"
        )
        assert sorted(obs.column(0).to_pylist()) == ["recovered", "restarted"]  # seen in the collectives too
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        for name in ("detect", "isolate", "recover"):
            fam = fams[f"c4_fault_time_to_{name}_seconds"]
            count = [
                s for s in fam.samples if s.name.endswith("_count") and s.labels["fault_class"] == "hardware"
            ]
            assert count and count[0].value >= 1, (name, fam.samples)
    finally:
        col.stop()
    # a new collector process on the same store sees the Xid again: the stored outcomes say it was done
    col = CollectorProc(tmp_path, port=col.port, extra=["--config", str(cfg)]).start()
    try:
        run_sim(col.address, scenario, tmp_path / "sim2", 20, timeout_s=240)
        t, _ = query_arrow(
            col.address,
            f"SELECT count(*) AS n FROM faults WHERE fault_id = '{XID_FAULT}' AND ts > "
            "(SELECT max(ts) FROM actions)",
        )
        assert t.to_pylist()[0]["n"] > 0  # re-detected after the restart
    finally:
        col.stop()
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls == [f"drain.sh host2 C4:{XID_FAULT}", f"requeue.sh train {XID_FAULT}"]
