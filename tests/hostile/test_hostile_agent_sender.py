"""Issue 15 item 13: no exception ends the sender; an out-of-range inventory value is dropped from
Hello, not fatal; an agent that cannot send says so. Lesser: an unusable spool dir is one clear
message and a non-zero exit, not a traceback."""

from __future__ import annotations

import logging
import subprocess
import sys

from testkit.agent_rig import heartbeat_agent
from testkit.procs import CollectorProc
from testkit.small_disk import small_tmpfs
from testkit.wait import wait_for

import c4.agent.runner as runner
from c4.agent.nic import NicSampler
from c4.agent.runner import ScheduledSampler
from c4.agent.sampler import StartupPolicy
from c4.query import query_arrow
from c4.sim.sysfs_tree import write_ib_port


def stored(address: str, sql: str):
    table, _ = query_arrow(address, sql)
    return table.to_pylist()


def test_out_of_range_rate_in_hello_does_not_stop_sending(tmp_path, caplog):
    root = tmp_path / "sys"
    write_ib_port(root, "mlx5_0", 1)
    write_ib_port(root, "mlx5_1", 1)
    (root / "class/infiniband/mlx5_0/ports/1/rate").write_text("99999999999999999999999 Gb/sec\n")
    col = CollectorProc(tmp_path).start()
    try:
        nic = ScheduledSampler(NicSampler(root), 0.05, StartupPolicy.ERROR)
        agent, hb = heartbeat_agent(tmp_path, tmp_path / "spool", collector=col.address, extra=[nic])
        agent.start()
        try:
            wait_for(lambda: agent.sender.stats.batches_acked >= 5, what="acks despite the bad rate file")
        finally:
            agent.stop()
        (node,) = stored(col.address, "SELECT nic_port_count, nics_json FROM nodes WHERE node = 'rig'")
        assert node["nic_port_count"] == 2 and '"rate_bps": 400000000000' in node["nics_json"]
    finally:
        col.stop()


class Failing:
    """A Hello builder that raises the first ``n`` times (a bug, a bad value), then works."""

    def __init__(self, real, n: int) -> None:
        self.real, self.n, self.calls = real, n, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.n:
            raise OverflowError(f"bug #{self.calls}")
        return self.real()


def test_any_exception_in_the_sender_is_logged_counted_and_retried(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, "c4.agent")
    monkeypatch.setattr(runner, "SEND_STALL_WARN_S", 0.2, raising=False)
    col = CollectorProc(tmp_path).start()
    try:
        agent, hb = heartbeat_agent(tmp_path, tmp_path / "spool", collector=col.address)
        agent.sender.hello = Failing(agent.hello_request, 5)
        agent.start()
        try:
            wait_for(lambda: agent.sender.stats.batches_acked >= 5, what="acks after the sender's errors")
        finally:
            agent.stop()
        assert agent.sender.stats.send_errors >= 5 and "OverflowError: bug #5" in (
            agent.sender.stats.last_send_error
        )
        assert caplog.text.count("OverflowError") >= 5
        assert "cannot send" in caplog.text  # said so while it could not send
        health = stored(
            col.address,
            "SELECT send_errors, last_send_error, since_last_ack_s FROM agent_health WHERE node = 'rig'",
        )
        assert max(h["send_errors"] for h in health) >= 5
        assert any("bug #" in h["last_send_error"] for h in health)
        assert all(h["since_last_ack_s"] >= 0 for h in health)
    finally:
        col.stop()


def agent_start(tmp_path, spool_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "c4.cli", "agent", "--samplers", "heartbeat", "--spool-dir", str(spool_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_spool_dir_under_a_regular_file_is_one_clear_message(tmp_path):
    (tmp_path / "afile").write_text("x")
    for spool_dir in (tmp_path / "afile" / "spool", tmp_path / "afile"):
        out = agent_start(tmp_path, spool_dir)
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and str(tmp_path / "afile") in out.stderr
        assert "not a directory" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_read_only_spool_dir_is_one_clear_message(tmp_path):
    with small_tmpfs(tmp_path / "ro", 1 << 20, read_only=True) as ro:
        out = agent_start(tmp_path, ro / "spool")
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert str(ro / "spool") in out.stderr and "Read-only file system" in out.stderr
        out = agent_start(tmp_path, ro)
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert str(ro) in out.stderr and "not writable: it is on a read-only file system" in out.stderr


def test_inventory_values_out_of_range_are_dropped_and_logged_once(caplog):
    from c4.agent.hello import build_message
    from c4.telemetry.v1 import telemetry_pb2 as pb

    warned: set[str] = set()
    for _ in range(3):
        values = {"device": "mlx5_0", "port": 2**40, "rate_bps": 10**30, "bogus": 1}
        msg = build_message(pb.NicPort, values, warned)
    assert (msg.device, msg.port, msg.rate_bps) == ("mlx5_0", 0, 0)
    assert caplog.text.count("NicPort.rate_bps") == 1 and caplog.text.count("NicPort.port") == 1
