"""``c4 bench chaos``: real agents keep sending while the collector and an agent are hurt; count what survived.

Three real agents (heartbeat sampler, one row per tick, each tick numbered) send to a real
collector on loopback while, one after the other: the collector is killed with SIGKILL and
restarted, the spool disk of one agent fills up (a small tmpfs) and is freed while the collector
is down, the collector's own disk fills up so that its commits fail and is then freed, an agent is
killed with SIGKILL and restarted, and the collector is killed and restarted once more. Then the
agents are stopped (they drain their spools) and every boot's ticks are counted in the store:
``lost`` are ticks missing below a boot's highest sampled tick, ``duplicated`` the extra copies.

A tick is "sampled" once the agent spooled it: the unspooled in-memory tail of an agent killed
with SIGKILL (at most one flush interval) was never accepted and is not counted. Disk faults need
tmpfs mounts (root); without them the run says so and injects the others.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from c4.bench.disk_faults import DiskFaultsUnavailable, Tmpfs
from c4.self_command import C4_COMMAND
from c4.sim.procs import free_port, wait_serving

HELP = "Chaos: collector and agent killed, disks filled, commits failing, while real agents send; lost/duplicated ticks."

#: The agents' settings: fast ticks so that a run of a minute holds thousands of them.
AGENT_ENV = {
    "C4_AGENT_INTERVAL_S": "0.05",
    "C4_AGENT_FLUSH_INTERVAL_S": "0.1",
    "C4_AGENT_HEALTH_INTERVAL_S": "1",
    "C4_AGENT_BACKOFF_INITIAL_S": "0.05",
    "C4_AGENT_BACKOFF_MAX_S": "0.5",
    "C4_AGENT_DRAIN_TIMEOUT_S": "60",
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of the chaos run."""
    parser.add_argument("--agents", type=int, default=3, help="real agents sending (default 3)")
    parser.add_argument(
        "--settle-s", type=float, default=2.0, help="seconds of normal sending between two faults (default 2)"
    )
    parser.add_argument(
        "--no-disk-faults", action="store_true", help="skip the faults that need tmpfs mounts (root)"
    )
    parser.add_argument(
        "--checkpoint-wal-mib",
        type=int,
        default=1,
        help="the collector checkpoints its file past this much WAL (default 1, the smallest: checkpoints, and "
        "commits diverted to the side file meanwhile, happen every few seconds of the run)",
    )
    parser.add_argument("--workdir", help="directory for logs, spools and the database (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory afterwards")


@dataclass
class Process:
    """A c4 subprocess with its arguments, so it can be killed and started again."""

    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self) -> Process:
        """Launch, appending to the log."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [*C4_COMMAND, *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        log.close()
        return self

    def kill9(self) -> None:
        """SIGKILL and reap."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout_s: float = 90.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)


@dataclass
class Tally:
    """Ticks per agent boot, as stored and as still spooled."""

    stored: dict[tuple[str, int], dict[int, int]] = field(
        default_factory=dict
    )  # (node, boot) -> tick -> copies
    spooled: dict[str, set[int]] = field(default_factory=dict)  # node -> ticks left in its spool

    def summary(self) -> dict[str, int]:
        """ticks_sampled, ticks_stored, lost, duplicated and still_spooled."""
        sampled = stored = lost = duplicated = 0
        for ticks in self.stored.values():
            top = max(ticks)
            sampled += top
            stored += len(ticks)
            duplicated += sum(n - 1 for n in ticks.values())
            lost += sum(1 for t in range(1, top + 1) if t not in ticks)
        spooled = sum(len(s) for s in self.spooled.values())
        return {
            "ticks_sampled": sampled,
            "ticks_stored": stored,
            "lost": lost,
            "duplicated": duplicated,
            "still_spooled": spooled,
        }


def stored_ticks(address: str) -> dict[tuple[str, int], dict[int, int]]:
    """Every stored heartbeat tick: (node, boot) -> tick -> copies."""
    from c4.query import query_arrow

    table, _ = query_arrow(
        address, "SELECT node, boot_ns, tick, count(*) AS n FROM agent_heartbeat GROUP BY ALL", timeout_s=60
    )
    out: dict[tuple[str, int], dict[int, int]] = {}
    for node, boot, tick, n in zip(*(table.column(i).to_pylist() for i in range(4)), strict=True):
        out.setdefault((node, boot), {})[tick] = n
    return out


def spooled_ticks(spool_dir: Path) -> set[int]:
    """Heartbeat ticks still in a stopped agent's spool."""
    import pyarrow.ipc as ipc

    from c4.agent.spool import Spool

    if not spool_dir.exists():
        return set()
    spool = Spool(spool_dir, 1 << 40)
    ticks: set[int] = set()
    try:
        for seq in spool.pending():
            batch = spool.read(seq)
            if batch is not None and batch.table == "agent_heartbeat":
                ticks |= set(ipc.open_stream(batch.payload).read_all().column("tick").to_pylist())
    finally:
        spool.close()
    return ticks


class ChaosRun:
    """The processes of one run and the faults done to them."""

    def __init__(
        self, workdir: Path, agents: int, settle_s: float, disk_faults: bool, checkpoint_wal_mib: int = 1
    ) -> None:
        self.workdir = workdir
        self.settle_s = settle_s
        self.address = f"127.0.0.1:{free_port()}"
        self.mounts: list[Tmpfs] = []
        self.faults: list[str] = []
        self.skipped: list[str] = []
        self.commit_errors = 0  # failed commits the collector answered while its disk was full
        db_dir = workdir / "collector-db"
        self.spool_disk: Tmpfs | None = None
        self.db_disk: Tmpfs | None = None
        if disk_faults:
            try:
                self.db_disk = self._mount(db_dir, 256 << 20)
                self.spool_disk = self._mount(workdir / "agent-spool-disk", 4 << 20)
            except DiskFaultsUnavailable as exc:
                self.skipped.append(str(exc))
        else:
            self.skipped.append("disk faults off (--no-disk-faults)")
        db_dir.mkdir(parents=True, exist_ok=True)
        cfg = workdir / "collector.toml"
        cfg.write_text(f"[collector]\ncheckpoint_wal_bytes = {checkpoint_wal_mib << 20}\n")
        self.collector = Process(
            ["collector", "--listen", self.address, "--db", str(db_dir / "c4.duckdb"), "--config", str(cfg)],
            workdir / "collector.log",
        )
        self.agents: dict[str, Process] = {}
        self.spools: dict[str, Path] = {}
        for i in range(agents):
            node = f"chaos-{i + 1}"
            base = self.spool_disk.path if (self.spool_disk and i == agents - 1) else workdir
            self.spools[node] = base / f"{node}-spool"
            self.agents[node] = Process(
                [
                    "agent",
                    "--collector",
                    self.address,
                    "--node",
                    node,
                    "--spool-dir",
                    str(self.spools[node]),
                    "--samplers",
                    "heartbeat",
                ],
                workdir / f"{node}.log",
                AGENT_ENV,
            )

    def _mount(self, path: Path, size: int) -> Tmpfs:
        m = Tmpfs(path, size)
        self.mounts.append(m)
        return m

    # --- progress --------------------------------------------------------------
    def _stored_per_node(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (node, _), ticks in stored_ticks(self.address).items():
            counts[node] = counts.get(node, 0) + len(ticks)
        return counts

    def wait_progress(self, ticks: int = 20, timeout_s: float = 120.0) -> None:
        """Wait until every agent has ``ticks`` more ticks stored than now (the system recovered)."""
        deadline = time.monotonic() + timeout_s
        start: dict[str, int] | None = None
        while time.monotonic() < deadline:
            try:
                now = self._stored_per_node()
            except Exception:  # the collector is starting up
                time.sleep(0.2)
                continue
            if start is None:
                start = now
            if all(now.get(n, 0) >= start.get(n, 0) + ticks for n in self.agents):
                return
            time.sleep(0.2)
        raise TimeoutError(f"no progress within {timeout_s:g} s: stored per agent {start} -> {now}")

    def _restart_collector(self) -> None:
        self.collector.start()
        wait_serving(self.address, 60)

    def _stats(self) -> dict[str, int]:
        import grpc

        from c4.security import ClientSecurity
        from c4.telemetry.v1 import telemetry_pb2 as pb
        from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

        with ClientSecurity().channel(self.address) as ch:
            try:
                return dict(pb_grpc.TelemetryStub(ch).Stats(pb.StatsRequest(), timeout=10).counters)
            except grpc.RpcError:
                return {}

    # --- faults ----------------------------------------------------------------
    def kill_collector(self) -> None:
        """SIGKILL the collector, let the agents spool for a moment, start it again."""
        self.collector.kill9()
        time.sleep(self.settle_s / 2)
        self._restart_collector()
        self.faults.append("collector_killed")

    def _wait_side_pending(self, deadline: float) -> bool:
        """Poll the collector's Stats (one channel, every few ms) until its side file holds rows."""
        import grpc

        from c4.security import ClientSecurity
        from c4.telemetry.v1 import telemetry_pb2 as pb
        from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

        with ClientSecurity().channel(self.address) as ch:
            stub = pb_grpc.TelemetryStub(ch)
            while time.monotonic() < deadline:
                try:
                    if stub.Stats(pb.StatsRequest(), timeout=5).counters.get("side_pending"):
                        return True
                except grpc.RpcError:
                    pass
                time.sleep(0.002)
        return False

    def kill_collector_diverted(self, timeout_s: float = 240.0) -> None:
        """SIGKILL the collector while acknowledged rows sit in its side file (committed there during a
        checkpoint, not moved in yet), then start it again: the start moves them in. Watches the
        collector's Stats, which its event loop answers also while the file checkpoints (a Query waits
        for the checkpoint, and the next commit moves the rows in). The rows can still be moved between
        the look and the kill: then the start finds none, and the fault is tried again."""
        deadline = time.monotonic() + timeout_s
        while self._wait_side_pending(deadline):
            before = self.side_recoveries()
            self.collector.kill9()
            time.sleep(self.settle_s / 2)
            self._restart_collector()
            self.faults.append("collector_killed")
            if self.side_recoveries() > before:
                self.faults[-1] = "collector_killed_while_diverted"
                return
        self.skipped.append(f"no kill found rows in the collector's side file within {timeout_s:g} s")

    def side_recoveries(self) -> int:
        """Starts that moved rows a killed collector left in its side file (from the collector's log)."""
        try:
            log = self.collector.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return log.count("side file rows moved into the store")

    def fill_spool_disk(self) -> None:
        """With the collector down, the last agent's spool disk fills up; then space returns."""
        assert self.spool_disk is not None
        self.collector.kill9()
        self.spool_disk.fill()
        time.sleep(self.settle_s)
        self.spool_disk.free()
        time.sleep(self.settle_s / 2)
        self._restart_collector()
        self.faults += ["collector_killed", "agent_spool_disk_full"]

    def fill_collector_disk(self) -> None:
        """The collector's disk fills up until a commit fails; then space returns."""
        assert self.db_disk is not None
        before = self._stats().get("commit_errors", 0)
        self.db_disk.fill(leave_bytes=32 << 10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self._stats().get("commit_errors", 0) <= before:
            time.sleep(0.1)
        failed = self._stats().get("commit_errors", 0) > before
        time.sleep(self.settle_s / 2)
        self.commit_errors += self._stats().get("commit_errors", 0) - before
        self.db_disk.free()
        if failed:
            self.faults.append("collector_commit_failed")
        else:
            self.skipped.append("the collector's disk filled but no commit failed within 30 s")

    def kill_agent(self, node: str) -> None:
        """SIGKILL an agent and start it again (a new boot, the same spool)."""
        self.agents[node].kill9()
        time.sleep(self.settle_s / 4)
        self.agents[node].start()
        self.faults.append("agent_killed")

    def run(self, progress: Callable[[str], None]) -> dict:
        """Every fault in turn, then stop and count."""
        self._restart_collector()
        for agent in self.agents.values():
            agent.start()
        steps: list[tuple[str, Callable[[], None]]] = [
            ("collector killed", self.kill_collector),
            ("collector killed while commits go to its side file", self.kill_collector_diverted),
        ]
        if self.spool_disk is not None:
            steps.append(("agent spool disk full (collector down)", self.fill_spool_disk))
        if self.db_disk is not None:
            steps.append(("collector disk full (commits fail)", self.fill_collector_disk))
        steps += [
            ("agent killed", lambda: self.kill_agent(next(iter(self.agents)))),
            ("collector killed again", self.kill_collector),
        ]
        self.wait_progress()
        for name, fault in steps:
            progress(name)
            fault()
            self.wait_progress()
        progress("stopping agents (they drain their spools)")
        codes = {node: agent.stop() for node, agent in self.agents.items()}
        tally = Tally(stored=stored_ticks(self.address))
        self.collector.stop()
        tally.spooled = {node: spooled_ticks(path) for node, path in self.spools.items()}
        return {
            **tally.summary(),
            "faults_injected": len(self.faults),
            "faults": self.faults,
            "skipped": self.skipped,
            "collector_commit_errors": self.commit_errors,
            "side_file_recoveries": self.side_recoveries(),
            "agent_exit_codes": codes,
        }

    def cleanup(self) -> None:
        """Stop whatever still runs and unmount."""
        for p in [self.collector, *self.agents.values()]:
            if p.proc is not None and p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(30)
        for m in self.mounts:
            m.unmount()


def run(args: argparse.Namespace) -> int:
    """Run the chaos and print what was lost and duplicated."""
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="c4-chaos-"))
    if args.checkpoint_wal_mib < 1:
        print("c4 bench chaos: --checkpoint-wal-mib must be >= 1", file=sys.stderr)
        return 2
    chaos = ChaosRun(workdir, args.agents, args.settle_s, not args.no_disk_faults, args.checkpoint_wal_mib)
    try:
        result = chaos.run(lambda step: print(f"chaos: {step}", file=sys.stderr, flush=True))
    finally:
        chaos.cleanup()
        if not (args.keep or args.workdir):
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'faults injected':<24}{result['faults_injected']} ({', '.join(result['faults'])})")
    for reason in result["skipped"]:
        print(f"{'skipped':<24}{reason}")
    for key in (
        "ticks_sampled",
        "ticks_stored",
        "lost",
        "duplicated",
        "still_spooled",
        "collector_commit_errors",
        "side_file_recoveries",
    ):
        print(f"{key.replace('_', ' '):<24}{result[key]}")
    if args.json:
        print(json.dumps(result))
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1
