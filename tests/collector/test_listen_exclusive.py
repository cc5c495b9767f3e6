"""A second collector on a port another one serves exits with a clear line instead of serving beside it.

gRPC binds with SO_REUSEPORT unless told not to, and ingest processes bind that way on purpose: the
kernel would then split the agents between two collectors, each storing half of them in its own file.
"""

from __future__ import annotations

import subprocess

from testkit.procs import C4, CollectorProc, wait_healthy


def second_collector(tmp_path, name: str, port: int, ingest_processes: int) -> subprocess.CompletedProcess:
    """`c4 collector` on ``port`` with a store of its own, run to its exit."""
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f"[collector]\ningest_processes = {ingest_processes}\n")
    return subprocess.run(
        [*C4, "collector", "--listen", f"127.0.0.1:{port}", "--db", str(tmp_path / f"{name}.duckdb")]
        + ["--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_second_collector_on_a_served_port_is_refused_with_or_without_ingest_processes(tmp_path):
    for first_ingest in (0, 1):
        home = tmp_path / f"first-{first_ingest}"
        home.mkdir()
        (home / "c.toml").write_text(f"[collector]\ningest_processes = {first_ingest}\n")
        col = CollectorProc(home, extra=["--config", str(home / "c.toml")]).start()
        try:
            for second_ingest in (0, 1):
                name = f"second-{first_ingest}-{second_ingest}"
                out = second_collector(tmp_path, name, col.port, second_ingest)
                assert out.returncode == 1, (name, out.stdout, out.stderr)
                line = out.stderr.strip().splitlines()[-1]
                assert line.startswith(f"c4 collector: cannot listen on 127.0.0.1:{col.port}: "), (name, line)
                assert "in use" in line, (name, line)
            wait_healthy(col.address, 20)  # the first one still serves
        finally:
            assert col.stop() == 0
