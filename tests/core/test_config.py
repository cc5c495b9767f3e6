"""Config: TOML + C4_* environment, validated with the bad key named."""

import pytest

from c4.config import ConfigError, load_config


def test_toml_then_env_override(tmp_path):
    p = tmp_path / "c4.toml"
    p.write_text(
        '[agent]\ncollector = "10.0.0.1:7070"\ninterval_s = 5\n[agent.samplers.host]\nproc_root = "/x"\n'
    )
    cfg = load_config(p, env={"C4_AGENT_INTERVAL_S": "2.5", "C4_COLLECTOR_DB": "/tmp/y.duckdb"})
    assert cfg.agent.collector == "10.0.0.1:7070" and cfg.agent.interval_s == 2.5
    assert str(cfg.collector.db) == "/tmp/y.duckdb" and cfg.agent.samplers == {"host": {"proc_root": "/x"}}


@pytest.mark.parametrize(
    ("toml", "env", "text"),
    [
        ("[agent]\nbogus = 1\n", {}, "agent.bogus"),
        ("[agent]\ncollector = 'nohost'\n", {}, "not HOST:PORT"),
        ("[agent]\ninterval_s = 0\n", {}, "interval_s"),
        ("[agnet]\n", {}, "agnet"),
        ("[agent\n", {}, "c4.toml"),
        ("", {"C4_COLLECTOR_NOPE": "1"}, "C4_COLLECTOR_NOPE"),
    ],
)
def test_errors_name_the_problem(tmp_path, toml, env, text):
    p = tmp_path / "c4.toml"
    p.write_text(toml)
    with pytest.raises(ConfigError, match=text):
        load_config(p, env=env)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/c4.toml", env={})
