"""Agent core without a network: startup policies, error counting, batching per table, health rows."""

from __future__ import annotations

import json

import pytest

from c4.agent.registry import SamplerContext
from c4.agent.runner import Agent, AgentStartError, ScheduledSampler
from c4.agent.sampler import SourceUnavailable, StartupPolicy
from c4.arrow_ipc import decode_ipc
from c4.config import AgentConfig


class FlakySource:
    """A test double sampler: unavailable until `up`, raises when `broken`."""

    name = "flaky"
    tables = ("agent_heartbeat",)

    def __init__(self) -> None:
        self.up = False
        self.broken = False
        self.n = 0

    def probe(self) -> None:
        if not self.up:
            raise SourceUnavailable("device not present")

    def sample(self, now_ns: int):
        if self.broken:
            raise OSError("read failed")
        self.n += 1
        return {"agent_heartbeat": [{"agent_id": "a", "boot_ns": 1, "tick": self.n, "uptime_s": 0.0}]}

    def close(self) -> None:
        pass


def make_agent(tmp_path, *samplers: ScheduledSampler) -> Agent:
    cfg = AgentConfig(node="n1", job="j1", spool_dir=tmp_path / "spool", collector="127.0.0.1:1")
    return Agent(cfg, list(samplers), SamplerContext("n1", "j1", {}), spool_fsync=False)


def spooled_tables(agent: Agent) -> dict[str, int]:
    out: dict[str, int] = {}
    for seq in agent.spool.pending():
        b = agent.spool.read(seq)
        out[b.table] = out.get(b.table, 0) + decode_ipc(b.payload).num_rows
    return out


def test_error_policy_refuses_to_start(tmp_path):
    agent = make_agent(tmp_path, ScheduledSampler(FlakySource(), 1.0, StartupPolicy.ERROR))
    with pytest.raises(AgentStartError, match="device not present"):
        agent.start_samplers()


def test_ignore_and_retry_policies(tmp_path):
    ignored, retried = FlakySource(), FlakySource()
    s_ign = ScheduledSampler(ignored, 1.0, StartupPolicy.IGNORE)
    s_ret = ScheduledSampler(retried, 1.0, StartupPolicy.RETRY)
    agent = make_agent(tmp_path, s_ign, s_ret)
    agent.start_samplers()
    assert (s_ign.state, s_ret.state) == ("unavailable", "retrying")
    retried.up = ignored.up = True
    assert s_ret.probe() and s_ret.state == "running"


def test_sampler_errors_are_counted_and_logged_once(tmp_path, caplog):
    src = FlakySource()
    src.up = True
    s = ScheduledSampler(src, 1.0, StartupPolicy.IGNORE)
    agent = make_agent(tmp_path, s)
    agent.start_samplers()
    agent.sample_one(s, 1_000_000_000)
    src.broken = True
    for _ in range(5):
        agent.sample_one(s, 2_000_000_000)
    assert (s.ticks, s.errors, s.last_error) == (1, 5, "read failed")
    assert caplog.text.count("read failed") == 1


def test_rows_that_do_not_fit_the_catalogue_are_a_sampler_error(tmp_path):
    src = FlakySource()
    src.up = True
    src.sample = lambda now_ns: {"agent_heartbeat": [{"tick": "not a number"}]}
    s = ScheduledSampler(src, 1.0, StartupPolicy.IGNORE)
    agent = make_agent(tmp_path, s)
    agent.sample_one(s, 1)
    assert s.errors == 1 and "agent_heartbeat" in s.last_error
    src.sample = lambda now_ns: {"no_such_table": [{"x": 1}]}
    agent.sample_one(s, 1)
    assert "unknown table 'no_such_table'" in s.last_error


def test_flush_batches_per_table_with_defaults_and_health(tmp_path):
    src = FlakySource()
    src.up = True
    s = ScheduledSampler(src, 1.0, StartupPolicy.IGNORE)
    agent = make_agent(tmp_path, s)
    agent.start_samplers()
    for i in range(3):
        agent.sample_one(s, (i + 1) * 1_000_000_000)
    agent.health_rows(5_000_000_000)
    assert agent.flush() == 3
    assert spooled_tables(agent) == {"agent_heartbeat": 3, "agent_health": 1, "agent_sampler_health": 1}
    b = agent.spool.read(agent.spool.pending()[0])
    t = decode_ipc(b.payload)
    assert set(t.column("node").to_pylist()) == {"n1"} and set(t.column("job").to_pylist()) == {"j1"}


def test_large_flush_is_split_under_the_batch_limit(tmp_path):
    src = FlakySource()
    src.up = True
    src.sample = lambda now_ns: {
        "agent_heartbeat": [
            {"agent_id": "x" * 100, "boot_ns": 1, "tick": i, "uptime_s": 0.0} for i in range(5000)
        ]
    }
    s = ScheduledSampler(src, 1.0, StartupPolicy.IGNORE)
    agent = make_agent(tmp_path, s)
    agent.cfg = agent.cfg.model_copy(update={"max_batch_bytes": 64 << 10})
    agent.sample_one(s, 1)
    made = agent.flush()
    sizes = [len(agent.spool.read(q).payload) for q in agent.spool.pending()]
    assert made == len(sizes) > 1 and max(sizes) <= 64 << 10
    assert spooled_tables(agent) == {"agent_heartbeat": 5000}


def test_agent_test_mode_prints_rows(tmp_path):
    import subprocess
    import sys

    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "stat").write_text(
        "cpu  100 0 50 1000 5 0 0 0 0 0\ncpu0 100 0 50 1000 5 0 0 0 0 0\nprocs_running 3\n"
    )
    (proc / "meminfo").write_text(
        "MemTotal: 1000 kB\nMemAvailable: 400 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
    )
    (proc / "loadavg").write_text("0.50 0.40 0.30 1/100 12345\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "c4.cli",
            "agent",
            "--test",
            "--samplers",
            "host",
            "--proc-root",
            str(proc),
            "--node",
            "t1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "### table host_memory (1 rows)" in out.stdout and "1024000" in out.stdout  # 1000 kB in bytes
    assert "### table host_cpu (2 rows)" in out.stdout


def test_bad_config_exits_2_naming_the_key(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "c4.cli", "agent", "--test", "--samplers", "nosuch"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "unknown sampler 'nosuch'" in out.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("[agent.samplers.host]\nproc_rot = '/x'\n")
    out = subprocess.run(
        [sys.executable, "-m", "c4.cli", "agent", "--test", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "[agent.samplers.host] proc_rot" in out.stderr


def test_sampler_health_says_why_records_were_skipped(tmp_path):
    src = FlakySource()
    src.up = True
    src.records_skipped = 3
    src.skipped_by_reason = {"conn": 2, "header": 1}
    s = ScheduledSampler(src, 1.0, StartupPolicy.IGNORE)
    agent = make_agent(tmp_path, s)
    agent.start_samplers()
    agent.health_rows(5_000_000_000)
    agent.flush()
    for seq in agent.spool.pending():
        t = decode_ipc(agent.spool.read(seq).payload)
        if "records_skipped_by_reason" in t.column_names:
            row = t.to_pylist()[0]
            assert row["records_skipped"] == 3
            assert json.loads(row["records_skipped_by_reason"]) == {"conn": 2, "header": 1}
            return
    raise AssertionError("no agent_sampler_health batch spooled")


def test_agent_test_mode_says_how_many_records_it_could_not_read_and_why(tmp_path):
    import subprocess
    import sys

    dump = tmp_path / "host-pid1.log"
    dump.write_text('{"header": {"id": "0x1"}, "coll_perf": "nope"}\n{not json\n')
    out = subprocess.run(
        [sys.executable, "-m", "c4.cli", "agent", "--test", "--samplers", "nccl_inspector"]
        + ["--nccl-inspector", str(dump), "--node", "t1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "2 records skipped as unreadable (not_an_inspector_record: 1, not_json: 1)" in out.stdout
