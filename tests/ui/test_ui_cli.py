"""`c4 ui` refuses what Streamlit could not serve with one line naming it, before starting Streamlit."""

from __future__ import annotations

import os
import socket
import subprocess

from testkit.procs import C4


def ui(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`c4 ui ARGS` run to its exit (each case here exits before Streamlit starts)."""
    return subprocess.run(
        [*C4, "ui", *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_bad_ports_addresses_and_settings_are_refused_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            (["--port", "99999"], {}, "argument --port: 99999 is not a port number (1-65535)"),
            (["--port", "-1"], {}, "argument --port: -1 is not a port number (1-65535)"),
            (["--port", "http"], {}, "argument --port: 'http' is not a port number"),
            (["--address", "192.0.2.1", "--port", "8501"], {}, "c4 ui: cannot serve on 192.0.2.1:8501: "),
            (["--port", str(port)], {}, f"c4 ui: cannot serve on 127.0.0.1:{port}: Address already in use"),
            ([], {"C4_CONFIG": "/nonexistent/ui.toml"}, "c4 ui: config file /nonexistent/ui.toml not found"),
            ([], {"C4_UI_COLLECTOR": "garbage"}, "c4 ui: C4_UI_COLLECTOR: 'garbage' is not HOST:PORT"),
        ]
        for args, env, words in cases:
            out = ui(*args, env=env)
            assert out.returncode == 2, (args, out.stderr)
            assert words in out.stderr, (args, out.stderr)
            assert "Traceback" not in out.stderr and "dashboard on" not in out.stdout, (args, out)
