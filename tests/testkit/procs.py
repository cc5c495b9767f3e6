"""Start, stop and kill real `c4 collector` / `c4 agent` processes on loopback ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from c4.security import ClientSecurity
from c4.self_command import C4_COMMAND
from c4.sim.procs import free_port, wait_serving

C4 = C4_COMMAND


def wait_healthy(address: str, timeout_s: float = 20.0, security: ClientSecurity | None = None) -> None:
    """Block until the collector's gRPC health service says SERVING."""
    wait_serving(address, timeout_s, security)


#: Every process a test started, so that none outlives its test (see ``kill_leftovers``).
_STARTED: list[subprocess.Popen] = []


def started_count() -> int:
    """How many processes were started so far (a mark for ``kill_leftovers``)."""
    return len(_STARTED)


def kill_leftovers(since: int = 0) -> int:
    """Kill (SIGKILL) every c4 process started after mark ``since`` and left running; returns how many."""
    killed = 0
    while len(_STARTED) > since:
        p = _STARTED.pop()
        if p.poll() is None:
            p.kill()
            p.wait(30)
            killed += 1
    return killed


class Proc:
    """A c4 subprocess with its log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.p: subprocess.Popen | None = None

    def start(self) -> Proc:
        """Launch (appending to the log)."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.p = subprocess.Popen(C4 + self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        _STARTED.append(self.p)
        return self

    def kill9(self) -> None:
        """SIGKILL: no cleanup at all."""
        assert self.p is not None
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(10)

    #: How long stop() waits for a clean exit after SIGTERM.
    STOP_TIMEOUT_S = 30.0

    def stop(self, timeout_s: float | None = None) -> int:
        """SIGTERM and wait for a clean exit (STOP_TIMEOUT_S unless given); returns the exit code."""
        timeout_s = self.STOP_TIMEOUT_S if timeout_s is None else timeout_s
        assert self.p is not None
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout_s)
        finally:
            self._log.close()

    def log(self) -> str:
        """The process output so far."""
        return self.log_path.read_text(errors="replace")


class CollectorProc(Proc):
    """A real collector on a loopback port owning a DuckDB file."""

    def __init__(
        self,
        tmp: Path,
        port: int | None = None,
        extra: list[str] | None = None,
        security: ClientSecurity | None = None,
        ready_timeout_s: float = 20.0,
    ) -> None:
        self.security = security  # how the health check reaches a TLS / mTLS collector
        #: how long start() waits for SERVING (a lake collector attaches a PostgreSQL catalog first)
        self.ready_timeout_s = ready_timeout_s
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.db = tmp / "c4.duckdb"
        super().__init__(
            ["collector", "--listen", self.address, "--db", str(self.db), *(extra or [])],
            tmp / "collector.log",
        )

    def start(self) -> CollectorProc:
        """Launch and wait until healthy."""
        super().start()
        try:
            wait_healthy(self.address, self.ready_timeout_s, security=self.security)
        except TimeoutError:
            raise TimeoutError(f"collector did not come up:\n{self.log()}") from None
        return self


class AgentProc(Proc):
    """A real agent streaming to a collector address, spooling under tmp."""

    #: Longer than any drain timeout a test gives its agents (60 s: C4_AGENT_DRAIN_TIMEOUT_S), so a stop
    #: on a loaded machine ends with the agent's own verdict, not the test's impatience.
    STOP_TIMEOUT_S = 90.0

    def __init__(
        self,
        tmp: Path,
        address: str,
        name: str = "agent",
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.spool = tmp / f"{name}-spool"
        super().__init__(
            ["agent", "--collector", address, "--spool-dir", str(self.spool), "--node", name, *(extra or [])],
            tmp / f"{name}.log",
            env,
        )


def run_sim(
    address: str, scenario: Path, workdir: Path, duration_s: float, speed: float = 5, timeout_s: float = 180
) -> None:
    """`c4 sim` streaming a scenario to the collector at ``address`` (agents every 0.25 s); it must exit 0."""
    proc = subprocess.run(
        [
            *C4_COMMAND,
            "sim",
            "--scenario",
            str(scenario),
            "--collector",
            address,
            "--workdir",
            str(workdir),
            "--duration-s",
            str(duration_s),
            "--speed",
            str(speed),
            "--agent-interval-s",
            "0.25",
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, proc.stderr


def run_bench_json(args: list[str], timeout_s: float, env: dict[str, str] | None = None) -> tuple[str, dict]:
    """Run ``c4 bench ...`` to completion (``env``: added to this process's); its stdout and the JSON
    object on its last line.

    A non-zero exit raises with the command's stderr, which ``check=True`` alone would hide."""
    done = subprocess.run(
        C4 + ["bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, **env} if env else None,
    )
    if done.returncode != 0:
        raise AssertionError(f"c4 bench {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done.stdout, json.loads(done.stdout.strip().splitlines()[-1])
