"""A second collector on a port another one serves exits with a clear line instead of serving beside it.

gRPC binds with SO_REUSEPORT unless told not to, and ingest processes bind that way on purpose: the
kernel would then split the agents between two collectors, each storing half of them in its own file.
"""

from __future__ import annotations

import subprocess

from testkit.procs import C4, CollectorProc, free_port, wait_healthy
from testkit.wait import wait_for


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


def test_of_two_collectors_with_ingest_processes_started_at_once_one_serves(tmp_path):
    """The check that nothing listens leaves the seconds until the ingest processes bind (SO_REUSEPORT)
    open; the port claim closes them (two started together both served before it)."""
    port = free_port()
    procs = []
    for name in ("a", "b"):
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text("[collector]\ningest_processes = 1\n")
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed below
        args = ["collector", "--listen", f"127.0.0.1:{port}", "--db", str(tmp_path / f"{name}.duckdb")]
        procs.append((subprocess.Popen([*C4, *args, "--config", str(cfg)], stdout=log, stderr=log), log))
    try:
        wait_healthy(f"127.0.0.1:{port}", 60)
        refused = wait_for(lambda: [p for p, _ in procs if p.poll() is not None], 60, "one collector refused")
        assert len(refused) == 1 and refused[0].returncode == 1, [p.poll() for p, _ in procs]
        logs = [(tmp_path / f"{n}.log").read_text() for n in ("a", "b")]
        assert sum("collector serving" in text for text in logs) == 1, logs
        assert sum(f"cannot listen on 127.0.0.1:{port}: " in text for text in logs) == 1, logs
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(60)
            log.close()
