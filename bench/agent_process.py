"""A real ``c4 agent`` process with every sampler of ``c4 bench agent``'s node, sending to a real collector on
loopback: its resident memory and its CPU over a steady stretch, read from /proc as an operator would."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from c4.self_command import C4_COMMAND
from c4.sim.procs import free_port, wait_serving

C4 = C4_COMMAND
#: Seconds the agent runs before the measured stretch: imports, first reads, the collector's first acks.
WARMUP_S = 5.0


def proc_figures(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) and resident / peak resident MiB of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    kib = {k: int(status[k].split()[0]) for k in ("VmRSS", "VmHWM")}
    return {"cpu_s": cpu_s, "rss_mib": kib["VmRSS"] / 1024, "peak_rss_mib": kib["VmHWM"] / 1024}


def task_cpu_ns(pid: int) -> dict[int, tuple[str, int]]:
    """Per live thread of a process, by thread id: its name and CPU nanoseconds so far
    (/proc/PID/task/*/comm and schedstat, nanosecond counters where /proc/PID/stat counts 10 ms ticks)."""
    return {tid: (name, cpu_ns) for tid, (name, cpu_ns, _) in task_times_ns(pid).items()}


def task_times_ns(pid: int, proc: Path = Path("/proc")) -> dict[int, tuple[str, int, int]]:
    """Per live thread of a process, by thread id: its name, and the nanoseconds it has run and waited
    runnable for a CPU so far (the first two fields of /proc/PID/task/TID/schedstat); {} once it is gone."""
    out: dict[int, tuple[str, int, int]] = {}
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
            ran_ns, waited_ns = (int(v) for v in (task / "schedstat").read_text().split()[:2])
        except (OSError, ValueError):  # the thread ended meanwhile, or a kernel without schedstats
            continue
        out[int(task.name)] = (name, ran_ns, waited_ns)
    return out


def thread_shares(
    pid: int, before: dict[int, tuple[str, int, int]], after: dict[int, tuple[str, int, int]], wall_s: float
) -> dict[str, dict[str, float]]:
    """Per OS thread name (the process's first thread as ``main``; threads of one name summed): the cores it
    ran on and the seconds per second it waited runnable for a CPU between two ``task_times_ns``, busiest first.
    A thread that started meanwhile counts from 0 (also under the id of one that ended: another name, or counters
    below the earlier reading); one that ended is left out, and so is one that neither ran nor waited."""
    ran: dict[str, int] = {}
    waited: dict[str, int] = {}
    for tid, (name, ran_ns, waited_ns) in after.items():
        label = "main" if tid == pid else name
        name0, ran0, waited0 = before.get(tid, (name, 0, 0))
        if name0 != name or ran0 > ran_ns or waited0 > waited_ns:  # the id went to a new thread meanwhile
            ran0 = waited0 = 0
        ran[label] = ran.get(label, 0) + ran_ns - ran0
        waited[label] = waited.get(label, 0) + waited_ns - waited0
    shares = {
        label: {
            "cores": round(ran[label] / 1e9 / wall_s, 3),
            "runq_wait_s_per_s": round(waited[label] / 1e9 / wall_s, 3),
        }
        for label in sorted(ran, key=lambda k: -ran[k])
    }
    return {label: v for label, v in shares.items() if v["cores"] or v["runq_wait_s_per_s"]}


def _by_name(tasks: dict[int, tuple[str, int]]) -> dict[str, int]:
    """CPU nanoseconds per thread name of one ``task_cpu_ns`` reading."""
    out: dict[str, int] = {}
    for name, ns in tasks.values():
        out[name] = out.get(name, 0) + ns
    return out


def cpu_s_between(
    before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]], ticks_cpu_s: float
) -> float:
    """CPU seconds a process spent between two ``task_cpu_ns`` readings: the threads alive at the end, to the
    nanosecond; a thread that ended in between is only in /proc/PID/stat's tick counter (``ticks_cpu_s``,
    10 ms steps), so the larger of the two (a 2 s stretch of a 0.7% agent is 14 ms: one tick or none)."""
    threads_ns = sum(ns - before.get(tid, ("", 0))[1] for tid, (_, ns) in after.items())
    return max(threads_ns / 1e9, ticks_cpu_s)


def _toml(
    samplers: dict[str, dict[str, Any]],
    address: str,
    spool: Path,
    node: str,
    flush_interval_s: float | None = None,
) -> str:
    """The agent's config file: the collector, the spool (the flush interval) and each sampler's section."""
    lines = ["[agent]", f'collector = "{address}"', f'node = "{node}"', f'spool_dir = "{spool}"']
    if flush_interval_s is not None:
        lines.append(f"flush_interval_s = {flush_interval_s!r}")
    for name, opts in samplers.items():
        lines.append(f"[agent.samplers.{name}]")
        lines += [f"{k} = {_value(v)}" for k, v in opts.items()]
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    """A TOML scalar."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def measure_agent_process(
    root: Path, samplers: dict[str, dict[str, Any]], seconds: float, flush_interval_s: float | None = None
) -> dict[str, Any]:
    """Run a collector and an agent for WARMUP_S + ``seconds``; the agent's CPU over the measured stretch
    as a share of one core, its resident and peak resident memory at the end (``flush_interval_s``: the
    agent's, else its default)."""
    address = f"127.0.0.1:{free_port()}"
    log = open(root / "procs.log", "ab")  # noqa: SIM115
    collector = subprocess.Popen(
        [*C4, "collector", "--listen", address, "--db", str(root / "c4.duckdb")], stdout=log, stderr=log
    )
    agent = None
    try:
        wait_serving(address, 60.0, None)
        (root / "agent.toml").write_text(
            _toml(samplers, address, root / "agent-spool", "bench-node", flush_interval_s)
        )
        agent = subprocess.Popen([*C4, "agent", "--config", str(root / "agent.toml")], stdout=log, stderr=log)
        time.sleep(WARMUP_S)
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited ({agent.returncode}); see {root / 'procs.log'}")
        before, tasks0, t0 = proc_figures(agent.pid), task_cpu_ns(agent.pid), time.monotonic()
        start_unix_s = time.time()
        time.sleep(seconds)
        after, tasks1, wall_s = proc_figures(agent.pid), task_cpu_ns(agent.pid), time.monotonic() - t0
    finally:
        for p in (agent, collector):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        log.close()
    per_sampler = sampler_cpu_ms_per_s(root / "c4.duckdb", "bench-node", start_unix_s)
    cpu_s = cpu_s_between(tasks0, tasks1, after["cpu_s"] - before["cpu_s"])
    threads0, threads1 = _by_name(tasks0), _by_name(tasks1)
    return {
        "core_share_at_1hz": round(cpu_s / wall_s, 5),
        "rss_mib": round(after["rss_mib"], 1),
        "peak_rss_mib": round(after["peak_rss_mib"], 1),
        "process_s": round(wall_s, 1),
        # where it goes: ms of CPU per second per OS thread name (c4-scheduler: every sampler's ticks, batching
        # and spooling; c4-sender: sending with the gRPC threads it starts; event_engine etc.: gRPC's core)
        "thread_cpu_ms_per_s": {
            name: round((ns - threads0.get(name, 0)) / 1e6 / wall_s, 3)
            for name, ns in sorted(threads1.items())
        },
        # of c4-scheduler's: each sampler's ticks, as the agent's own health rows stored them
        "sampler_cpu_ms_per_s": per_sampler,
    }


def sampler_cpu_ms_per_s(db: Path, node: str, since_unix_s: float) -> dict[str, float]:
    """ms of CPU per second of each sampler's ticks, from the agent_sampler_health rows the collector stored:
    the cpu_s counter between a sampler's first and last row from ``since_unix_s`` on (every row of the run
    when the stretch holds fewer than two: health rows come every health_interval_s)."""
    import duckdb  # lazy: only after the run, to read what the collector stored (the bench imports light)

    query = (
        "SELECT sampler, (max(cpu_s) - min(cpu_s)) * 1e3 / nullif(epoch(max(ts)) - epoch(min(ts)), 0), count(*) "
        "FROM agent_sampler_health WHERE node = ? AND ts >= to_timestamp(?)::TIMESTAMP "
        "GROUP BY sampler ORDER BY sampler"
    )
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(query, [node, since_unix_s]).fetchall()
        if not rows or min(n for _, _, n in rows) < 2:
            rows = con.execute(query, [node, 0]).fetchall()
    return {name: round(ms, 3) for name, ms, _ in rows if ms is not None}
