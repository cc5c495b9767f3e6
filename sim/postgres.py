"""A throwaway PostgreSQL server from Debian's packages on a loopback port (a DuckLake catalog for tests and benchmarks)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from c4.sim.procs import free_port


def server_bindir() -> Path:
    """Where initdb and pg_ctl are (the newest installed major version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found: install Debian's postgresql (make sysdeps does)"
        )
    return Path(found[-1]).parent


class LocalPostgres:
    """initdb + pg_ctl in a temporary directory, run as the postgres user when we are root; database `lake`."""

    def __init__(self) -> None:
        self.bin = server_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="c4-pg-"))
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        self.url = f"postgres://c4@127.0.0.1:{self.port}/lake"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> LocalPostgres:
        """Create the cluster, start it and create the `lake` database."""
        data = self.dir / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "c4", "--no-sync")
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"
        )
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "c4", "lake")
        return self

    def postmaster_pid(self) -> int:
        """The server's main process id (from its postmaster.pid)."""
        return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Stop immediately and remove everything."""
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
