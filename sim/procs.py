"""A real collector subprocess on a free loopback port, for benchmarks and the demo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from c4 import parent_death
from c4.client_config import split_host_port
from c4.listen_check import refuse_if_served
from c4.security import ClientSecurity
from c4.self_command import C4_COMMAND


def die_with_parent(then=None):
    """A ``preexec_fn``: the child gets SIGTERM when the process that started it dies, however it dies
    (Linux ``PR_SET_PDEATHSIG``; elsewhere nothing), so a killed ``c4 sim``, demo or benchmark leaves
    no collector or agent behind; ``then`` runs after (e.g. CPU pinning).

    The signal follows the thread that forked: start children from a thread that lives as long as
    they should (the main thread here).

    ``prctl`` is looked up here, in the parent, so the child does as little as it can between fork and
    exec (Python's documentation: ``preexec_fn`` may deadlock when the parent has threads; a test
    process has gRPC's). A CI run lost a collector with gRPC's "Other threads are currently calling
    into gRPC, skipping fork() handlers" in its output; whether this was why is not proven (200 forks
    beside threads looping on ``dlopen`` hung none with the lookup in the child either)."""
    parent = os.getpid()
    prctl = parent_death.prctl_function()

    def setup() -> None:
        parent_death.arm(prctl, parent, signal.SIGTERM)
        if then is not None:
            then()

    return setup


def child_pids(pid: int) -> list[int]:
    """The children of a process (a collector's ingest processes; zombies too until reaped), from /proc."""
    out = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(p) for p in path.read_text().split()]
        except OSError:
            continue
    return out


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(
    address: str,
    timeout_s: float = 30.0,
    security: ClientSecurity | None = None,
    proc: subprocess.Popen | None = None,
) -> None:
    """Block until the gRPC health service reports SERVING; with ``proc`` (the collector's process), raise
    ChildProcessError as soon as it has exited instead of waiting out the timeout."""
    security = security or ClientSecurity()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ChildProcessError(f"collector for {address} exited with {proc.returncode} before serving")
        with security.channel(address) as ch:
            try:
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.1)
    raise TimeoutError(f"collector at {address} did not become healthy")


@dataclass
class CollectorProcess:
    """Handle on a collector subprocess."""

    proc: subprocess.Popen
    address: str
    db: Path

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_collector(
    workdir: Path,
    listen: str | None = None,
    extra: list[str] | None = None,
    log_path: Path | None = None,
    cpus: set[int] | None = None,
) -> CollectorProcess:
    """Start ``c4 collector`` with its DuckDB under workdir and wait until it serves.

    ``cpus`` pins the process (every thread it will start) to those CPUs, as on a host that has
    only them.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    address = listen or f"127.0.0.1:{free_port()}"
    if listen:  # another collector there would answer the health checks below, and take this one's rows
        host, port = split_host_port(listen)
        try:
            refuse_if_served(host, port)
        except OSError as exc:
            raise OSError(f"cannot start a collector on {listen}: {exc.strerror or exc}") from None
    db = workdir / "c4.duckdb"
    log = open(log_path or workdir / "collector.log", "ab")  # noqa: SIM115 - owned by the child
    log_start = log.tell()
    proc = subprocess.Popen(
        [*C4_COMMAND, "collector", "--listen", address, "--db", str(db), *(extra or [])],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ},
        preexec_fn=die_with_parent((lambda: os.sched_setaffinity(0, cpus)) if cpus else None),  # noqa: PLW1509 - two syscalls, prctl looked up before the fork
    )
    try:
        wait_serving(address, proc=proc)
        wait_logged(
            Path(log.name), log_start, SERVING_LINE, proc
        )  # this collector, not one started meanwhile
    except (TimeoutError, ChildProcessError) as exc:
        proc.kill()
        log.flush()
        raise type(exc)(f"{exc}; its log ends:\n{_tail(Path(log.name))}") from None
    return CollectorProcess(proc, address, db)


#: What a collector logs once it serves (c4.collector.server).
SERVING_LINE = "collector serving "


def wait_logged(path: Path, offset: int, words: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Block until ``words`` appear in ``path`` past ``offset``; ChildProcessError when ``proc`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                if words.encode() in f.read():
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise ChildProcessError(f"collector exited with {proc.returncode} before serving")
        time.sleep(0.1)
    raise TimeoutError(f"collector did not log {words.strip()!r} within {timeout_s:g} s")


def _tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file ('' when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
