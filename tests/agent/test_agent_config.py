"""The agent's config without pydantic (c4.client_config, c4.options): same keys, same clear errors, and a
running ``c4 agent`` process that never loads pydantic."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from c4.agent.labels import context_from
from c4.agent.registry import SamplerConfigError
from c4.agent.runner import build_samplers
from c4.client_config import AgentConfig, ConfigError, load_agent_config
from c4.config import load_config
from c4.self_command import C4_COMMAND


def test_file_and_environment_give_the_same_section_as_the_full_loader(tmp_path):
    """The agent's own loader and the whole-file loader agree, strings from the environment converted."""
    p = tmp_path / "c4.toml"
    p.write_text(
        '[agent]\ncollector = "10.0.0.1:7070,10.0.0.2:7070"\nnode = "n1"\nlabels = { rack = "r1" }\n'
        '[agent.samplers.nic]\nsysfs_root = "/x"\n[collector]\nretention_s = 60\n'
    )
    env = {"C4_AGENT_INTERVAL_S": "2.5", "C4_AGENT_SPOOL_FSYNC": "true", "C4_AGENT_MAX_IN_FLIGHT": "8"}
    mine = load_agent_config(p, env=env)
    assert mine == load_config(p, env=env).agent
    assert mine.interval_s == 2.5 and mine.spool_fsync is True and mine.max_in_flight == 8
    assert mine.spool_dir == Path("/var/lib/c4/spool") and mine.labels == {"rack": "r1"}
    assert mine.samplers == {"nic": {"sysfs_root": "/x"}} and mine.effective_agent_id == "n1"


@pytest.mark.parametrize(
    ("toml", "env", "text"),
    [
        ("[agent]\nbogus = 1\n", {}, r"\[agent.bogus\] unknown key"),
        ("[agent]\nmax_in_flight = 0\n", {}, r"\[agent.max_in_flight\] must be >= 1, got 0"),
        (
            "",
            {"C4_AGENT_INTERVAL_S": "fast"},
            r"environment\): \[agent.interval_s\] expected a number, got str 'fast'",
        ),
        ("", {"C4_AGENT_NOPE": "1"}, "C4_AGENT_NOPE"),
        # an interval of inf would never tick, nan passes no bound
        ("", {"C4_AGENT_INTERVAL_S": "inf"}, r"\[agent.interval_s\] expected a finite number, got str 'inf'"),
        ("[agent]\nflush_interval_s = nan\n", {}, r"\[agent.flush_interval_s\] expected a finite number"),
        ("[agent]\ncollector = '10.0.0.1'\n", {}, r"\[agent.collector\] '10.0.0.1' is not HOST:PORT"),
        ("[agent]\nnode = 'a b'\n", {}, "the collector would refuse this agent: hostname"),
        ("[agent]\nlabels = { rack = 3 }\n", {}, r"\[agent.labels\] expected a string, got int 3"),
        ("[agnet]\n", {}, r"\[agnet\] is not a section"),
    ],
)
def test_errors_name_the_key(tmp_path, toml, env, text):
    p = tmp_path / "c4.toml"
    p.write_text(toml)
    with pytest.raises(ConfigError, match=text):
        load_agent_config(p, env=env)


@pytest.mark.parametrize(
    ("samplers", "text"),
    [
        ({"gpu": {"keyframe_ticks": 0}}, r"\[agent.samplers.gpu\] keyframe_ticks: must be >= 1, got 0"),
        (
            {"nic": {"include": "mlx5_*"}},
            r"\[agent.samplers.nic\] include: expected a list, got str 'mlx5_\*'",
        ),
        (
            {"nccl_ras": {"format": "xml"}},
            r"\[agent.samplers.nccl_ras\] format: expected one of 'auto', 'json', 'text', got 'xml'",
        ),
        ({"host": {"interval_s": 0}}, r"\[agent.samplers.host\] interval_s: must be > 0, got 0.0"),
        (
            {"host": {"startup": "sometimes"}},
            r"\[agent.samplers.host\] startup: expected one of 'error', 'ignore', 'retry', got 'sometimes'",
        ),
        (
            {"nccl_debug_log": {"log_dir": "/a", "log_file": "/b"}},
            r"\[agent.samplers.nccl_debug_log\] give log_dir or log_file, not both",
        ),
    ],
)
def test_sampler_option_errors_name_the_sampler_and_key(tmp_path, samplers, text):
    cfg = AgentConfig(node="n1", spool_dir=tmp_path, samplers=samplers)
    with pytest.raises(SamplerConfigError, match=text):
        build_samplers(cfg, context_from(cfg, env={}))


def test_sampler_options_are_converted(tmp_path):
    """Paths from strings, the common keys taken off, the rest reaching the sampler."""
    root = tmp_path / "sys"
    cfg = AgentConfig(
        node="n1",
        spool_dir=tmp_path,
        samplers={
            "nic": {"sysfs_root": str(root), "interval_s": 5, "startup": "retry", "slow_every_ticks": 3}
        },
    )
    [s] = build_samplers(cfg, context_from(cfg, env={}))
    assert s.interval_s == 5.0 and s.policy.value == "retry"
    assert s.sampler.slow_every_ticks == 3 and str(s.sampler.base).startswith(str(root))


def test_a_running_agent_never_loads_pydantic(tmp_path):
    """A real ``c4 agent`` with its samplers started: pydantic's native core is not mapped."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[agent]\ncollector = "127.0.0.1:1"\nnode = "n1"\nspool_dir = "{tmp_path / "spool"}"\n'
        f'[agent.samplers.heartbeat]\n[agent.samplers.host]\n[agent.samplers.nic]\nsysfs_root = "{tmp_path}"\n'
        "[agent.samplers.gpu]\n"
    )
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        p = subprocess.Popen([*C4_COMMAND, "agent", "--config", str(cfg)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while "agent started" not in log.read_text() and time.monotonic() < deadline:
            assert p.poll() is None, log.read_text()
            time.sleep(0.1)
        assert "agent started" in log.read_text(), log.read_text()
        maps = Path(f"/proc/{p.pid}/maps").read_text()
    finally:
        p.terminate()
        p.wait(30)
    assert "cygrpc" in maps, sorted(set(re.findall(r"site-packages/(\w+)", maps)))
    assert "pydantic" not in maps, [line for line in maps.splitlines() if "pydantic" in line][:3]
