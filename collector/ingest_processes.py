"""Starts, watches and stops a collector's ingest processes (``c4.collector.ingest_process``)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys

from c4.config import CollectorConfig, split_host_port
from c4.listen_check import bound_socket, refuse_if_served

log = logging.getLogger("c4.collector.ingest_processes")

#: How long an ingest process may take to import and bind before the collector gives up.
START_TIMEOUT_S = 60.0


def reserve_port(address: str) -> tuple[socket.socket, int]:
    """Bind (without listening) a SO_REUSEPORT socket on ``address`` to fix a port for every process.

    Port 0 means "any free port": the ingest processes must all get the same one, so the collector
    picks it and holds it for its lifetime (a bound socket that never listens takes no connections).
    """
    host, port = split_host_port(address)
    sock = bound_socket(host, port, socket.SO_REUSEPORT)
    return sock, sock.getsockname()[1]


def claim_port(host: str, port: int) -> socket.socket:
    """A socket in Linux's abstract namespace named for ``host:port``, held while this collector's ingest processes
    serve it: OSError (in use) when another collector with ingest processes holds it. Binding is atomic, where
    the check that nothing listens (``refuse_if_served``) leaves the seconds until the processes bind open;
    the kernel frees the name when this process dies, however it dies."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"\0c4-collector-ingest-listen-{host}:{port}")
    except OSError:
        sock.close()
        raise
    return sock


class IngestProcesses:
    """N ingest processes serving ``cfg.listen`` for a store process reachable at ``store_address``."""

    def __init__(self, cfg: CollectorConfig, count: int, store_address: str, log_level: str = "INFO") -> None:
        self.cfg = cfg
        self.count = count
        self.store_address = store_address
        self.log_level = log_level
        self.port = 0
        self.restarts = 0
        self._reserved: socket.socket | None = None
        self._claim: socket.socket | None = None  # held while serving: claim_port
        self._procs: list[asyncio.subprocess.Process | None] = [None] * count
        self._watch: asyncio.Task | None = None
        self._stopping = False
        self._failures: dict[int, int] = {}  # consecutive failed restarts per index

    async def start(self) -> int:
        """Start every ingest process and wait until each serves; returns the public port."""
        host, port = split_host_port(self.cfg.listen)
        if port == 0:
            self._reserved, port = reserve_port(self.cfg.listen)
        else:  # ingest processes bind with SO_REUSEPORT: they would join another collector's listeners
            # the claim first, so that of two collectors starting at once one fails here
            self._claim = claim_port(host, port)
            refuse_if_served(host, port)
        self.port = port
        bracketed = f"[{host}]" if ":" in host else host
        self._listen = f"{bracketed}:{port}"
        try:
            for i in range(self.count):
                await self._spawn(i)
        except BaseException:
            await self.stop()
            raise
        self._watch = asyncio.create_task(self._supervise())
        return port

    async def _spawn(self, i: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "c4.collector.ingest_process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._procs[i] = proc
        cfg = self.cfg.model_dump(mode="json") | {"listen": self._listen}
        start = {"config": cfg, "store": self.store_address, "log_level": self.log_level}
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(start).encode() + b"\n")
        await proc.stdin.drain()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            raise OSError(f"ingest process {i} did not start within {START_TIMEOUT_S:g} s") from None
        if not line.startswith(b"ready "):
            code = await proc.wait()
            raise OSError(
                f"ingest process {i} could not serve {self._listen} (exit code {code}; see its log)"
            )
        log.info("ingest process started index=%d pid=%d listen=%s", i, proc.pid, self._listen)

    async def _supervise(self) -> None:
        """Restart an ingest process that exits while the collector runs (its agents reconnect)."""
        while not self._stopping:
            waits = {asyncio.ensure_future(p.wait()): i for i, p in enumerate(self._procs) if p is not None}
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in pending:
                w.cancel()
            for w in done:
                i = waits[w]
                if self._stopping:
                    return
                failures = self._failures.get(i, 0)
                log.error("ingest process exited index=%d code=%s: restarting", i, w.result())
                self.restarts += 1
                await asyncio.sleep(
                    min(30.0, 0.5 * 2**failures)
                )  # one that cannot start is retried ever less often
                try:
                    await self._spawn(i)
                    self._failures[i] = 0
                except OSError as exc:
                    self._failures[i] = failures + 1
                    log.error("ingest process restart failed index=%d error=%s", i, exc)

    @property
    def pids(self) -> list[int]:
        """Process ids of the running ingest processes."""
        return [p.pid for p in self._procs if p is not None and p.returncode is None]

    async def stop(self, grace_s: float = 5.0) -> None:
        """Close every ingest process's stdin (they stop serving), then wait; kill what lingers."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        for p in self._procs:
            if p is not None and p.stdin is not None and not p.stdin.is_closing():
                p.stdin.close()
        for p in self._procs:
            if p is None:
                continue
            try:
                await asyncio.wait_for(p.wait(), grace_s)
            except TimeoutError:
                log.warning("ingest process did not stop pid=%d: killing it", p.pid)
                p.kill()
                await p.wait()
        if self._reserved is not None:
            self._reserved.close()
        if self._claim is not None:
            self._claim.close()
