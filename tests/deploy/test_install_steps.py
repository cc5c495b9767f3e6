"""The systemd install as the README writes it: make-certs.sh, a tokens file, the shipped example configs.

Paths under /etc/c4 and /var/lib/c4 move into a temporary directory and the collector listens on
loopback; everything else (TLS, tokens, metrics, the agent and the reader config) is used as shipped.
"""

from __future__ import annotations

import functools
import secrets
import subprocess
import urllib.request
from pathlib import Path

from testkit.procs import C4, CollectorProc, Proc
from testkit.wait import wait_for as wait_for_condition

from c4.config import load_config
from c4.query import query_arrow
from c4.security import ClientSecurity
from c4.sim.procs import free_port

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy" / "systemd"


def installed(name: str, tmp: Path, port: int, metrics_port: int) -> Path:
    """deploy/systemd/NAME with its /etc and /var paths under tmp and the collector on loopback."""
    text = (SYSTEMD / name).read_text()
    for old, new in (
        ("/etc/c4/", f"{tmp}/etc/c4/"),
        ("/var/lib/c4", f"{tmp}/var/lib/c4"),
        ("0.0.0.0:7070", f"127.0.0.1:{port}"),
        ("0.0.0.0:9470", f"127.0.0.1:{metrics_port}"),
        ("c4-collector.example.internal:7070", f"127.0.0.1:{port}"),
        ('collector = "127.0.0.1:7070"', f'collector = "127.0.0.1:{port}"'),
    ):
        text = text.replace(old, new)
    path = tmp / "etc" / "c4" / name
    path.write_text(text)
    return path


#: These waits cover a collector and agents starting under TLS: a longer timeout, a slower poll.
wait_for = functools.partial(wait_for_condition, timeout_s=60.0, poll_s=0.2)


def test_systemd_install_with_make_certs_and_tokens(tmp_path):
    etc = tmp_path / "etc" / "c4"
    # README: deploy/make-certs.sh /etc/c4/tls c4-collector.example.internal,10.0.0.5
    subprocess.run(
        [str(REPO / "deploy" / "make-certs.sh"), str(etc / "tls"), "c4-collector.example.internal,127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # README: one token per node (agent NAME = node), one reader token for the dashboard
    agent_token, reader_token = secrets.token_hex(24), secrets.token_hex(24)
    (etc / "tokens").write_text(f"{agent_token} agent gpu-node-017\n{reader_token} reader dashboard\n")
    (etc / "agent.token").write_text(agent_token + "\n")
    (etc / "ui.token").write_text(reader_token + "\n")
    port, metrics_port = free_port(), free_port()
    collector_toml = installed("collector.toml", tmp_path, port, metrics_port)
    agent_toml = installed("agent.toml", tmp_path, port, metrics_port)
    ui_toml = installed("ui.toml", tmp_path, port, metrics_port)
    reader = ClientSecurity.from_config(load_config(ui_toml, env={}).query)

    col = CollectorProc(tmp_path, port=port, security=reader)
    col.args = ["collector", "--config", str(collector_toml)]  # exactly what c4-collector.service runs
    col.start()
    agent = Proc(
        ["agent", "--config", str(agent_toml), "--node", "gpu-node-017", "--samplers", "host,heartbeat"],
        tmp_path / "agent.log",
        {"C4_AGENT_INTERVAL_S": "0.1", "C4_AGENT_FLUSH_INTERVAL_S": "0.1"},
    ).start()
    try:
        sql = "SELECT count(*) FROM agent_heartbeat WHERE node = 'gpu-node-017'"
        wait_for(
            lambda: query_arrow(f"127.0.0.1:{port}", sql, security=reader)[0].column(0)[0].as_py() >= 3,
            what="rows",
        )
        # `c4 sql --config /etc/c4/ui.toml` reads the same [query] section
        out = subprocess.run(
            C4
            + [
                "sql",
                "--config",
                str(ui_toml),
                "--format",
                "csv",
                "SELECT count(DISTINCT node) AS n FROM nodes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == ["n", "1"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
            assert 'c4_agent_last_batch_age_seconds{agent_id="gpu-node-017"}' in resp.read().decode()
    finally:
        agent.stop()
        col.stop()
    assert "tls=True" in col.log() and "tokens=2" in col.log()
    assert "plaintext" not in agent.log()
