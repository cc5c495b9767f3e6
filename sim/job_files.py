"""Writes what a node of a jobs scenario exposes: NCCL init lines, Inspector records, NVML, and the step trace.

The same per-node layout as ``c4.sim.node_files`` (``inspector/``, ``nccl-logs/``, ``nvml.json``, ``sys/``,
``kmsg.log``) plus ``proc/`` (``stat``, ``meminfo``, ``loadavg``: ``c4.sim.proc_files``) and ``step_trace/`` (``STEP_TRACE_DIR``): one JSON-lines file per rank,
``<job>-rank<r>.jsonl``, in the training-step trace format (docs/step-trace.md), appended as ops end
(left empty when the twin's ``step_trace`` is off: a job that exports no trace, the common case).
Inspector records go to ``inspector/<host>-pid<pid>.log`` as NCCL names them: per rank and
communicator one ``coll_perf`` per data-parallel (and, with ``inspector_tp``, tensor-parallel)
collective and one ``p2p_perf`` (Send or Recv) per pipeline transfer, with per-communicator sequence
numbers and whole microseconds, the start time only with ``inspector_verbose`` (the fields NCCL's
inspector writes: ``inspectorCompletedColl``/``inspectorCompletedP2p`` and their ``*Verbose``
functions in its ``inspector_json`` source).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from c4.agent.registry import SAMPLERS
from c4.sim.faults import FAULT_KINDS
from c4.sim.node_files import HEALTHY_GAUGES, PCI_BUSES, STEP_TRACE_DIR, NodeWriter
from c4.sim.proc_files import ProcWriter

#: NCCL's names of the trace's collectives (Inspector ``coll``).
_COLL = {"all_reduce": "AllReduce", "reduce_scatter": "ReduceScatter", "all_gather": "AllGather"}
#: CPUs of a simulated host per GPU (/proc/stat's cpuN lines).
HOST_CPUS_PER_GPU = 2
#: Trace columns written to each JSON line (nulls left out), in the documented order.
_TRACE_KEYS = (
    "job", "rank", "dp_rank", "pp_stage", "tp_rank", "step", "op", "start_s", "duration_s",
    "microbatch", "host", "local_rank", "comm", "ep_rank",
)  # fmt: skip


class JobNodeWriter(NodeWriter):
    """One node of a jobs scenario, advanced from the twin's ticks."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        (self.root / STEP_TRACE_DIR).mkdir(parents=True, exist_ok=True)
        # the host's /proc (what the host sampler reads): calm unless a fault's expose sets ``host_state``
        self.proc = ProcWriter(
            self.root / "proc", cpus=HOST_CPUS_PER_GPU * self.gpus, boot_s=self.epoch_s - 3600
        )
        self.host_state = "calm"
        self._sn: dict[
            tuple[str, int, str], int
        ] = {}  # (comm id, comm rank, coll|p2p) -> next sequence number
        self._nnodes: dict[str, int] = {}  # communicator name -> nodes its members run on

    def sampler_config(self) -> dict[str, dict[str, Any]]:
        """The node's samplers, the step-trace sampler on ``step_trace/`` where the agent has one, and the
        host sampler on ``proc/``."""
        cfg = super().sampler_config()
        if "step_trace" in SAMPLERS:
            cfg["step_trace"] = {"trace_dir": str(self.root / STEP_TRACE_DIR)}
        cfg["host"] = {"proc_root": str(self.root / "proc")}
        return cfg

    def write_init_log(self, twin) -> None:
        """NCCL_DEBUG=INFO init lines: every communicator of every rank on this node (world, TP, DP, PP, EP)."""
        lines = self._init_lines(twin, 0)
        (self.root / "nccl-logs" / f"{self.node}.log").write_text("\n".join(lines) + ("\n" if lines else ""))

    def append_init_log(self, twin, run: int) -> None:
        """A relaunched run's init lines, appended to the node's NCCL log (its communicators are new)."""
        lines = self._init_lines(twin, run)
        if lines:
            with open(self.root / "nccl-logs" / f"{self.node}.log", "a") as f:
                f.write("\n".join(lines) + "\n")

    def _init_lines(self, twin, run: int) -> list[str]:
        """One ``ncclCommInitRank`` line per communicator of every rank of this node in one run of its job."""
        job = twin.job_name(self.node)
        lines = []
        if job:
            spec = twin.job_specs[job]
            base = spec.hosts.index(self.node) * self.gpus
            for k in range(min(self.gpus, spec.world - base)):
                gpu, p = twin.gpu_of(self.node, k), twin.pid_of(self.node, k)
                for i, (comm, rank, size) in enumerate(twin.communicators(job, base + k)):
                    lines.append(
                        f"{self.node}:{p}:{p} [{k}] NCCL INFO ncclCommInitRank comm "
                        f"0x{0x55D0000 + 0x100000 * run + 0x1000 * i + k:x} "
                        f"rank {rank} nranks {size} cudaDev {k} nvmlDev {gpu} "
                        f"busId {PCI_BUSES[gpu % len(PCI_BUSES)]:x}000 commId {twin.comm_id(job, comm, run)} - Init START"
                    )
        return lines

    def apply(self, twin, out) -> None:
        """Write one tick: gauges and faults, NIC counters, NVML, Inspector records and step-trace lines."""
        job = twin.job_name(self.node)
        stuck = job in out.blocked_jobs
        for g in range(self.gpus):
            gauges = self.gpu_gauges(g)
            gauges.update(HEALTHY_GAUGES)
            if stuck:  # the job's other ranks spin in the collective their hung peer never joins
                gauges["util_gpu_pct"] = 100.0
            elif job in out.restarting_jobs:  # killed, not yet relaunched: nothing runs on the GPUs
                gauges["util_gpu_pct"] = 0.0
        if job in out.relaunched:  # the new run initializes its communicators before its first collective
            self.append_init_log(twin, out.relaunched[job])
        mine = replace(out, blocked=stuck)
        self.host_state = "calm"
        for fault in twin.faults:
            if fault.node == self.node:
                FAULT_KINDS[fault.kind].expose(self, fault, mine)
        self.proc.advance(out.duration_s, self.host_state)
        self.proc.write()
        self._write_link_changes(out)
        self._write_nic_counters(out)
        self._write_nvml(out)
        rows = [r for r in out.ops.get(job, []) if r["host"] == self.node] if job else []
        self._write_inspector(twin, job, rows)
        if twin.step_trace:
            self._write_step_trace(rows)

    def _next_sn(self, comm: str, rank: int, kind: str) -> int:
        key = (comm, rank, kind)
        n = self._sn.get(key, 0)
        self._sn[key] = n + 1
        return n

    def _write_inspector(self, twin, job: str, rows: list[dict[str, Any]]) -> None:
        """One Inspector record per collective or pipeline transfer a rank of this node finished."""
        if not rows:
            return
        tj = twin.twin_jobs[job]
        spec = tj.spec
        by_file: dict[str, list[str]] = {}
        for r in rows:
            op, comm = r["op"], r["comm"] or ""
            if op in _COLL and (comm.split("/", 1)[-1].startswith("dp.") or twin.inspector_tp):
                name = comm.split("/", 1)[1]
                member = dict((c, (rk, n)) for c, rk, n in twin.communicators(job, r["rank"]))
                rank, size = member[name]
                perf_kind, peer = "coll", None
                size_b = tj.grad_bytes if name.startswith("dp.") else tj.activation_bytes
            elif op.startswith(("send_", "recv_")):
                s, d, t = r["pp_stage"], r["dp_rank"], r["tp_rank"]
                name, rank, size = f"pp.d{d}.t{t}", s, spec.pp
                perf_kind = "p2p"
                peer = s + 1 if op in ("send_forward", "recv_backward") else s - 1
                size_b = tj.activation_bytes
            else:
                continue
            cid = twin.comm_id(job, name, r.get("run", 0))
            if name not in self._nnodes:
                self._nnodes[name] = len({spec.host_of(x)[0] for x in self._members(spec, name)})
            nodes = self._nnodes[name]
            exec_us = round(r["duration_s"] * 1e6)  # NCCL writes whole microseconds (jsonUint64)
            end_us = int(self.wall(r["end_s"]) * 1e6)
            pid = twin.pid_of(self.node, r["local_rank"])
            bw = size_b / max(exec_us, 1) / 1e3
            if perf_kind == "coll":
                perf = {
                    "coll": _COLL[op],
                    "coll_sn": self._next_sn(cid, rank, "coll"),
                    "coll_msg_size_bytes": int(size_b),
                    "coll_exec_time_us": exec_us,
                    "coll_timing_source": "kernel_gpu",
                    "coll_algobw_gbs": bw,
                    "coll_busbw_gbs": bw * 2 * (size - 1) / size
                    if op == "all_reduce"
                    else bw * (size - 1) / size,
                }
                rec = {"coll_perf": perf}
            else:
                rec = {
                    "p2p_perf": {
                        "p2p": "Send" if op.startswith("send") else "Recv",
                        "p2p_sn": self._next_sn(cid, rank, "p2p"),
                        "p2p_peer": peer,
                        "p2p_msg_size_bytes": int(size_b),
                        "p2p_exec_time_us": exec_us,
                        "p2p_timing_source": "kernel_gpu",
                        "p2p_algobw_gbs": bw,
                        "p2p_busbw_gbs": bw,
                    }
                }
            if (
                twin.inspector_verbose
            ):  # NCCL_INSPECTOR_DUMP_VERBOSE=1: the op's start (and its enqueue's end)
                start_us = int(self.wall(r["start_s"]) * 1e6)
                pre = perf_kind
                rec[f"{pre}_perf"]["event_trace_ts"] = {
                    f"{pre}_start_ts": start_us,
                    f"{pre}_stop_ts": start_us,
                }
            head = {
                "header": {"id": cid, "rank": rank, "n_ranks": size, "nnodes": nodes},
                "metadata": {
                    "inspector_output_format_version": "v4.0",
                    "dump_timestamp_us": end_us,
                    "hostname": self.node,
                    "pid": pid,
                },
            }
            by_file.setdefault(f"{self.node}-pid{pid}.log", []).append(json.dumps({**head, **rec}))
        for name, lines in by_file.items():
            with open(self.root / "inspector" / name, "a") as f:
                f.write("\n".join(lines) + "\n")

    @staticmethod
    def _members(spec, name: str) -> list[int]:
        """Global ranks of a job communicator named as ``JobsTwin.communicators`` names it."""
        parts = dict((p[0], int(p[1:])) for p in name.split(".")[1:])
        kind = name.split(".")[0]
        if kind == "tp":
            return [spec.rank(parts["s"], parts["d"], x) for x in range(spec.tp)]
        if kind == "dp":
            return [spec.rank(parts["s"], x, parts["t"]) for x in range(spec.dp)]
        if kind == "pp":
            return [spec.rank(x, parts["d"], parts["t"]) for x in range(spec.pp)]
        if kind == "ep":
            return [spec.rank(parts["s"], parts["g"] * spec.ep + x, parts["t"]) for x in range(spec.ep)]
        return list(range(spec.world))

    def _write_step_trace(self, rows: list[dict[str, Any]]) -> None:
        """Append each finished op to its rank's trace file, start in Unix seconds."""
        by_file: dict[str, list[str]] = {}
        for r in rows:
            rec = {k: r[k] for k in _TRACE_KEYS if r.get(k) is not None}
            rec["start_s"] = self.wall(r["start_s"])
            by_file.setdefault(f"{r['job']}-rank{r['rank']}.jsonl", []).append(json.dumps(rec))
        for name, lines in by_file.items():
            with open(self.root / STEP_TRACE_DIR / name, "a") as f:
                f.write("\n".join(lines) + "\n")
