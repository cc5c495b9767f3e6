"""Issue 15 item 14: a file that blocks (a FIFO where a counter should be) hangs no reader, and a
source that does hang stops only itself: heartbeats and health rows keep flowing."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from testkit.agent_rig import heartbeat_agent, spooled
from testkit.wait import wait_for

import c4.agent.runner as runner
from c4.agent.host import HostSampler
from c4.agent.nccl_inspector import InspectorSampler
from c4.agent.nic import NicSampler
from c4.agent.runner import ScheduledSampler
from c4.agent.sampler import Inventory, StartupPolicy
from c4.agent.sysfs import read_counter, read_text
from c4.agent.tail import FileTailer
from c4.arrow_ipc import decode_ipc
from c4.sim.sysfs_tree import write_ib_port, write_netdev

DATA = Path(__file__).resolve().parents[1] / "data" / "nccl"


def finishes(fn, *args):
    """Run fn on a daemon thread; its result, or an AssertionError naming it if it is still blocked after 20 s
    (a hang detector: a reader that blocks on a FIFO never returns at all)."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), f"{getattr(fn, '__qualname__', fn)} blocked on a FIFO"
    return out[0]


def fifo_in_place_of(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def test_shared_readers_refuse_a_fifo(tmp_path):
    fifo = tmp_path / "counter"
    os.mkfifo(fifo)
    assert finishes(read_text, fifo) is None
    assert finishes(read_counter, str(fifo)) is None
    assert finishes(read_text, "/dev/zero") is None  # a device is not a sysfs attribute either


def test_nic_sampler_with_fifo_counter_and_state_files(tmp_path):
    root = tmp_path / "sys"
    write_ib_port(root, "mlx5_0", 1, counters={"port_xmit_data": 7})
    write_ib_port(root, "mlx5_1", 1, counters={"port_xmit_data": 9})
    write_netdev(root, "ens0np0")
    s = NicSampler(root)
    s.probe()  # files discovered as regular files; they turn into FIFOs afterwards
    port = root / "class/infiniband/mlx5_0/ports/1"
    for f in ("counters/port_xmit_data", "counters/port_rcv_data", "state", "rate", "link_layer"):
        fifo_in_place_of(port / f)
    fifo_in_place_of(root / "class/net/ens0np0/statistics/rx_bytes")
    fifo_in_place_of(root / "class/net/ens0np0/operstate")
    out = finishes(s.sample, 0)
    ports = {r["device"]: r for r in out["ib_port_samples"]}
    assert ports["mlx5_0"]["tx_bytes"] is None and ports["mlx5_0"]["state"] == ""
    assert ports["mlx5_1"]["tx_bytes"] == 36
    assert out["netdev_samples"][0]["rx_bytes"] is None
    inv = Inventory()
    finishes(s.inventory, inv)
    assert [n["rate_bps"] for n in inv.nics] == [0, 400_000_000_000]


def test_host_sampler_with_a_fifo_in_proc(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "stat").write_text("cpu  100 0 50 1000 5 0 0 0 0 0\nprocs_running 3\n")
    (proc / "meminfo").write_text("MemTotal: 1000 kB\nMemAvailable: 400 kB\n")
    os.mkfifo(proc / "loadavg")
    s = HostSampler(proc)
    s.probe()
    out = finishes(s.sample, 0)
    assert out["host_memory"][0]["load1"] is None and out["host_memory"][0]["mem_total_bytes"] == 1024000


def test_tailer_whose_file_is_replaced_by_a_fifo(tmp_path):
    d = tmp_path / "dump"
    d.mkdir()
    line = (DATA / "inspector-rank2.log").read_text().splitlines()[0]
    (d / "a.log").write_text(line + "\n")
    s = InspectorSampler(d)
    s.probe()
    assert len(finishes(s.sample, 0)["nccl_collectives"]) == 1
    fifo_in_place_of(d / "a.log")  # "rotated" into a FIFO
    os.mkfifo(d / "b.log")
    assert finishes(s.sample, 0)["nccl_collectives"] == []
    t = FileTailer(d / "b.log")
    assert finishes(t.read_lines) == []


class Stuck:
    """A source whose read never returns (a hung driver, an NFS mount gone away)."""

    name = "stuck"
    tables = ("agent_heartbeat",)

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def probe(self) -> None:
        pass

    def sample(self, now_ns: int):
        self.entered.set()
        self.release.wait()
        return {}

    def close(self) -> None:
        self.release.set()


def stuck_rows(agent) -> int:
    """agent_sampler_health rows spooled so far that report the 'stuck' sampler as stuck."""
    n = 0
    for seq in agent.spool.pending():
        b = agent.spool.read(seq)
        if b is not None and b.table == "agent_sampler_health":
            n += sum(
                1
                for r in decode_ipc(b.payload).to_pylist()
                if (r["sampler"], r["state"]) == ("stuck", "stuck")
            )
    return n


def test_a_stuck_source_stops_only_itself(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(runner, "STUCK_AFTER_S", 0.3, raising=False)
    src = Stuck()
    stuck = ScheduledSampler(src, 0.01, StartupPolicy.IGNORE)
    agent, hb = heartbeat_agent(tmp_path, tmp_path / "spool", extra=[stuck])
    agent.start()
    try:
        assert src.entered.wait(20)
        wait_for(lambda: hb.tick >= 50, what="heartbeats while another source hangs")
        wait_for(lambda: agent.sampler_state(stuck) == "stuck", what="the stuck sampler reported")
        wait_for(lambda: stuck_rows(agent) >= 3, what="health rows while a source hangs")
        src.release.set()
        wait_for(lambda: agent.sampler_state(stuck) == "running", what="the source coming back")
    finally:
        agent.stop()
    rows = spooled(tmp_path / "spool")
    states = {r["state"] for r in rows["agent_sampler_health"] if r["sampler"] == "stuck"}
    assert "stuck" in states
    # once per episode; the heartbeat may have a slow tick of its own past the test's 0.3 s on a busy machine
    stuck_lines = [
        line for line in caplog.text.splitlines() if "sampler stuck" in line and "sampler=stuck " in line
    ]
    assert len(stuck_lines) == 1, caplog.text


class SlowOnce:
    """A source whose second tick blocks until released, then ticks normally: rows carry the tick number."""

    name = "slow_once"
    tables = ("agent_heartbeat",)

    def __init__(self) -> None:
        self.release = threading.Event()
        self.n = 0
        self.threads: set[str] = set()

    def probe(self) -> None:
        pass

    def sample(self, now_ns: int):
        self.n += 1
        self.threads.add(threading.current_thread().name)
        if self.n == 2:
            self.release.wait(30)
        return {"agent_heartbeat": [{"agent_id": "slow", "boot_ns": 1, "tick": self.n, "uptime_s": 0.0}]}

    def close(self) -> None:
        self.release.set()


def test_a_blocking_tick_is_handed_off_and_its_rows_are_kept(tmp_path, monkeypatch):
    """Samplers tick on the scheduler thread; one that blocks past HANDOFF_AFTER_S gets a thread of its own
    while a new scheduler thread goes on with the others; the blocked tick's rows still arrive, once."""
    monkeypatch.setattr(runner, "HANDOFF_AFTER_S", 0.2)
    monkeypatch.setattr(runner, "WATCH_EVERY_S", 0.05)
    src = SlowOnce()
    slow = ScheduledSampler(src, 0.01, StartupPolicy.IGNORE)
    agent, hb = heartbeat_agent(tmp_path, tmp_path / "spool", extra=[slow])
    agent.start()
    try:
        wait_for(lambda: src.n == 2, what="the blocking tick")
        wait_for(lambda: agent.handoffs == 1, what="the hand-off")
        ticks = hb.tick
        wait_for(lambda: hb.tick >= ticks + 20, what="heartbeats while the other source blocks")
        assert src.n == 2  # its ticks wait for the blocked one (counted as overruns), none runs beside it
        src.release.set()
        wait_for(lambda: src.n >= 10, what="the source ticking again, on its own thread")
    finally:
        agent.stop()
    assert src.threads == {"c4-scheduler", "c4-sampler-slow_once"}  # first inline, then on its own thread
    assert slow.overruns > 0 and agent.handoffs == 1
    rows = spooled(tmp_path / "spool")
    slow_ticks = [r["tick"] for r in rows["agent_heartbeat"] if r["agent_id"] == "slow"]
    assert sorted(slow_ticks) == list(
        range(1, max(slow_ticks) + 1)
    )  # the blocked tick's row kept, none twice
