"""Config: TOML + C4_* environment, validated with the bad key named."""

import subprocess

import pytest
from testkit.procs import C4

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
        # numbers that would break a task at every run, or the start, are refused naming the key
        ("[collector]\nretention_s = 1e11\n", {}, r"collector.retention_s\] 1e\+11 s is longer than"),
        ("[collector]\nlake_lease_timeout_s = 0.001\n", {}, r"lake_lease_timeout_s\] 0.001 s is too short"),
        ("[collector]\ndiagnose_window_s = 1e300\n", {}, r"collector.diagnose_window_s\] 1e\+300 s"),
        (
            "[collector]\nmax_clock_skew_s = inf\n",
            {},
            r"collector.max_clock_skew_s\] Input should be a finite",
        ),
        ("", {"C4_COLLECTOR_RETENTION_S": "nan"}, r"collector.retention_s\] Input should be a finite"),
        (
            "[collector]\nmax_batch_bytes = 600000000\n",
            {},
            r"collector.max_batch_bytes\] Input should be less",
        ),
        ("[collector]\ncheckpoint_wal_bytes = 9223372036854775807\n", {}, r"checkpoint_wal_bytes\] Input"),
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


def test_collector_flags_are_refused_in_one_line_naming_the_flag(tmp_path):
    for args, words in [
        (["--retention-s", "0"], "c4 collector: --retention-s: Input should be greater than 0"),
        (["--listen", "127.0.0.1:99999"], "c4 collector: --listen: '127.0.0.1:99999' is not HOST:PORT"),
        (["--retention-s", "1e12"], "c4 collector: --retention-s: 1e+12 s is longer than 1e+09 s"),
    ]:
        out = subprocess.run(
            [*C4, "collector", "--db", str(tmp_path / "c4.duckdb"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "C4_CONFIG": ""},
        )
        assert out.returncode == 2 and out.stderr.startswith(words), (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr  # no pydantic dump, no URL
    out = subprocess.run(  # a negative one argparse refuses first, naming it too
        [*C4, "collector", "--db", str(tmp_path / "c4.duckdb"), "--retention-s", "-5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "argument --retention-s: -5 is negative" in out.stderr, out.stderr


def test_list_and_table_keys_from_the_environment():
    """README: every key can be set as C4_<SECTION>_<KEY>; list and table keys said "valid list" / "a table"."""
    env = {
        "C4_COLLECTOR_ALERT_WEBHOOK_URLS": '["http://a:1/x", "http://b:2/y"]',
        "C4_COLLECTOR_REMEDIATION_HOLD_JOBS": "train, eval",
        "C4_COLLECTOR_REPLAN_APPLY_FORMATS": "sport-table",
        "C4_AGENT_LABELS": '{rack = "r1", pod = "p2"}',
        "C4_COLLECTOR_MTLS_ROLES": "*=agent dash=reader",  # its own NAME=ROLE form stays
        "C4_COLLECTOR_LISTEN": "[::1]:7070",  # a string key is never read as an array
    }
    cfg = load_config(None, env=env)
    assert cfg.collector.alert_webhook_urls == ["http://a:1/x", "http://b:2/y"]
    assert cfg.collector.remediation_hold_jobs == ["train", "eval"]
    assert cfg.collector.replan_apply_formats == ["sport-table"]
    assert cfg.agent.labels == {"rack": "r1", "pod": "p2"}
    assert (
        cfg.collector.mtls_roles == {"*": "agent", "dash": "reader"} and cfg.collector.listen == "[::1]:7070"
    )
    with pytest.raises(ConfigError, match="C4_AGENT_LABELS: not a TOML array or inline table"):
        load_config(None, env={"C4_AGENT_LABELS": "{rack = }"})
