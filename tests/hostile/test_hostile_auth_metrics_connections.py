"""Anyone who reaches /metrics (it has no authentication) may open connections and say nothing:
the collector caps how many it serves at once and drops the silent ones, and keeps serving."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from testkit.procs import CollectorProc
from testkit.wire import stub

from c4.query import query_arrow
from c4.security import ClientSecurity
from c4.sim.procs import free_port
from c4.telemetry.v1 import telemetry_pb2 as pb

HELD = 300


def threads_of(pid: int) -> int:
    """The process's thread count."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def scrape(port: int) -> tuple[int, str]:
    """(HTTP status, body) of one /metrics scrape."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def refused(address: str) -> int:
    """Metrics connections the collector refused so far (Stats)."""
    counters = stub(address, ClientSecurity()).Stats(pb.StatsRequest(), timeout=30).counters
    return counters["metrics_connections_refused"] if "metrics_connections_refused" in counters else 0


def hold(port: int, n: int) -> list[socket.socket]:
    """``n`` connections to the metrics port that send nothing."""
    return [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(n)]


def closed_by_server(s: socket.socket) -> bytes:
    """Everything the server sent before closing the connection (the client waits up to 60 s)."""
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data


def test_held_metrics_connections_cannot_take_the_collectors_threads(tmp_path):
    port = free_port()
    config = tmp_path / "c4.toml"
    config.write_text(
        "[collector]\n"
        f'metrics_listen = "127.0.0.1:{port}"\n'
        "metrics_max_connections = 4\n"
        "metrics_read_timeout_s = 2.0\n"
        "diagnose_interval_s = 0\n"
    )
    col = CollectorProc(tmp_path, extra=["--config", str(config)]).start()
    try:
        assert scrape(port)[0] == 200
        baseline = threads_of(col.p.pid)
        held = hold(port, HELD)
        try:
            # at most 4 are served at once, each on a thread; the collector keeps serving gRPC
            assert threads_of(col.p.pid) <= baseline + 4 + 2
            assert query_arrow(col.address, "SELECT 42")[0].column(0).to_pylist() == [42]
            assert threads_of(col.p.pid) <= baseline + 4 + 2
            # every one is answered 503 at once or, silent, dropped after metrics_read_timeout_s
            answers = [closed_by_server(s) for s in held]
        finally:
            for s in held:
                s.close()
        refusals = sum(a.startswith(b"HTTP/1.0 503") for a in answers)
        assert refusals and all(a == b"" or a.startswith(b"HTTP/1.0 503") for a in answers)
        assert refused(col.address) == refusals
        status, body = scrape(port)
        assert status == 200 and "c4_collector_metrics_connections_refused_total" in body
    finally:
        assert col.stop() == 0
