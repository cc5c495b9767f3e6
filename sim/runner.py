"""The digital twin at work: a simulated cluster writing node files, read by one real agent per node."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from c4.catalogue import load
from c4.push import push_table
from c4.query import QueryError, query_arrow
from c4.self_command import C4_COMMAND
from c4.sim.job_files import JobNodeWriter
from c4.sim.jobs_twin import JobsTwin
from c4.sim.node_files import NodeWriter
from c4.sim.procs import die_with_parent
from c4.sim.twin import ClusterTwin

log = logging.getLogger("c4.sim.runner")


def _ts(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC).replace(tzinfo=None)


class SimRunner:
    """Owns the twin, the per-node writers and (optionally) the agents reading them."""

    def __init__(
        self,
        workdir: Path,
        twin: ClusterTwin | JobsTwin,
        scenario: str = "scenario",
        epoch_s: float | None = None,
    ):
        self.workdir = Path(workdir)
        self.twin = twin
        self.scenario = scenario
        self.epoch_s = time.time() if epoch_s is None else epoch_s
        writer = JobNodeWriter if isinstance(twin, JobsTwin) else NodeWriter
        self.writers = {
            h: writer(self.workdir / "nodes" / h, h, i, twin.gpus, twin.nics, self.epoch_s)
            for i, h in enumerate(twin.hosts)
        }
        for w in self.writers.values():
            w.write_init_log(twin)
            w.write_processes(twin)
        self.agents: list[subprocess.Popen] = []
        self.steps = 0

    def ground_truth_rows(self) -> list[dict]:
        """The scenario's faults as sim_ground_truth rows."""
        rows = []
        for t in self.twin.ground_truth():
            rows.append(
                {
                    "ts": _ts(self.epoch_s),
                    "node": t.get("node") or t["component"].split("/")[0],
                    "job": t.get("job", "train"),
                    "scenario": self.scenario,
                    "fault": t["fault"],
                    "component_type": t["component_type"],
                    "component": t["component"],
                    "onset_ts": _ts(self.epoch_s + t["onset_s"]),
                    "end_ts": _ts(self.epoch_s + t["end_s"]) if t["end_s"] is not None else None,
                    "expected_class": t["expected_class"],
                    "expected_action": t["expected_action"],
                    "xid": t["xid"],
                    # jobs scenarios: what the fault costs its job, who only waited, a stall's host state (truth.jsonl only)
                    **{k: t[k] for k in ("slowdown_frac", "blamed", "affected", "host_state") if k in t},
                }
            )
        return rows

    def write_ground_truth(self, collector: str | None) -> None:
        """truth.jsonl in the workdir, and the sim_ground_truth table when a collector is given."""
        rows = self.ground_truth_rows()
        with open(self.workdir / "truth.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r, default=str) + "\n")
        if collector and rows:
            push_table(
                collector,
                "sim_ground_truth",
                pa.Table.from_pylist(rows, schema=load()["sim_ground_truth"].arrow_schema),
                agent_id="c4-sim",
            )

    def start_agents(self, collector: str, interval_s: float = 1.0, env: dict | None = None) -> None:
        """One real `c4 agent` per simulated node, reading that node's files."""
        for host, w in self.writers.items():
            cfg = w.root / "agent.toml"
            lines = [
                "[agent]",
                f'node = "{host}"',
                f'job = "{self.twin.job_name(host)}"',
                f"interval_s = {interval_s}",
                f"flush_interval_s = {interval_s}",
                "health_interval_s = 10",
            ]
            for name, opts in w.sampler_config().items():
                lines.append(f"[agent.samplers.{name}]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in opts.items()]
            cfg.write_text("\n".join(lines) + "\n")
            logf = open(w.root / "agent.log", "ab")  # noqa: SIM115 - owned by the child
            self.agents.append(
                subprocess.Popen(
                    [
                        *C4_COMMAND,
                        "agent",
                        "--config",
                        str(cfg),
                        "--collector",
                        collector,
                        "--spool-dir",
                        str(w.root / "spool"),
                    ],
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **(env or {})},
                    preexec_fn=die_with_parent(),  # noqa: PLW1509 - a killed c4 sim leaves no agent
                )
            )

    def wait_agents(self, collector: str, timeout_s: float = 60.0) -> int:
        """Block until every node's agent has delivered a heartbeat (so the run starts observed); returns how many did."""
        hosts = ", ".join(f"'{h}'" for h in self.writers)
        sql = f"SELECT count(DISTINCT node) FROM agent_heartbeat WHERE node IN ({hosts})"
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            try:
                table, _ = query_arrow(collector, sql)
                seen = int(table.column(0)[0].as_py() or 0)
            except QueryError:
                seen = 0
            if seen >= len(self.writers):
                break
            time.sleep(0.2)
        return seen

    def step(self) -> float:
        """One iteration of the twin written to every node; returns its simulated duration."""
        out = self.twin.step()
        for w in self.writers.values():
            w.apply(self.twin, out)
        self.steps += 1
        return out.duration_s if out.duration_s > 0 else 1.0

    def run(self, duration_s: float, speed: float = 1.0, stop=lambda: False) -> None:
        """Advance simulated time by duration_s; speed 1 = real time, 0 = as fast as possible."""
        wall0 = time.monotonic()
        while self.twin.t < duration_s and not stop():
            self.step()
            if speed > 0:
                ahead = self.twin.t / speed - (time.monotonic() - wall0)
                if ahead > 0:
                    time.sleep(ahead)

    def stop_agents(self) -> None:
        """SIGTERM every agent and wait."""
        for p in self.agents:
            p.terminate()
        for p in self.agents:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.agents.clear()
