"""cpu_stall: one rank's host side starves its GPU: a slow data loader and pauses (GC) before a forward."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from c4.sim.faults.kind import Fault, JobCauseKind
from c4.sim.pipeline import Cause

if TYPE_CHECKING:
    from c4.sim.job_files import JobNodeWriter
    from c4.sim.jobs_twin import JobsStepOutput, JobsTwin

#: What the stalled rank's host can be doing meanwhile (``Fault.host_state``; c4.sim.proc_files.HOST_LOADS).
HOST_STATES = ("busy", "iowait")
#: Ops a rank runs on the host, not its GPU: the GPU idles through them (and through gaps between ops).
HOST_OPS = ("data_load", "checkpoint")


def gpu_busy_share(rows: list[dict[str, Any]], t0_s: float, t1_s: float) -> float:
    """Share of [t0_s, t1_s) covered by a rank's GPU ops (compute and communication, waits included: NCCL
    kernels spin while they wait), from the ops that ended in it; host ops and gaps leave the GPU idle."""
    spans = sorted((max(r["start_s"], t0_s), min(r["end_s"], t1_s)) for r in rows if r["op"] not in HOST_OPS)
    busy, reach = 0.0, t0_s
    for a, b in spans:
        a = max(a, reach)
        if b > a:
            busy += b - a
            reach = b
    return busy / (t1_s - t0_s) if t1_s > t0_s else 0.0


class CpuStall(JobCauseKind):
    """The rank on ``node``/``gpu``: data_load takes ``factor`` times as long, and each step one forward
    starts ``stall_s`` late although its input is there. Its GPU idles meanwhile (NVML utilisation from the
    rank's ops) and its host is ``host_state``: busy (loader, GC, Python) or in iowait (storage)."""

    expected_class, component_type, expected_action = "cpu_stall", "cpu", "investigate_host"

    def cause(self, twin: JobsTwin, fault: Fault) -> tuple[str, Cause]:
        """The rank on the fault's GPU."""
        if fault.host_state not in HOST_STATES:
            raise ValueError(f"cpu_stall host_state {fault.host_state!r}: one of {HOST_STATES}")
        job, rank = twin.rank_at(fault.node, fault.gpu)
        return job, Cause("cpu_stall", [rank], fault.factor, stall_s=fault.stall_s)

    def expose(self, writer: JobNodeWriter, fault: Fault, out: JobsStepOutput) -> None:
        """While active: the host's /proc/stat shows ``host_state``, the GPU's NVML utilisation its busy share."""
        if not fault.active(out.t):
            return
        writer.host_state = fault.host_state
        mine = [
            r
            for rows in out.ops.values()
            for r in rows
            if r["host"] == fault.node and r["local_rank"] == fault.gpu
        ]
        if mine:
            share = gpu_busy_share(mine, out.t, out.t + out.duration_s)
            writer.gpu_gauges(fault.gpu)["util_gpu_pct"] = round(100.0 * share, 1)

    def component(self, twin: JobsTwin, fault: Fault) -> str:
        """``<host>/cpu``."""
        return f"{fault.node}/cpu"

    def truth(self, twin: JobsTwin, fault: Fault) -> dict[str, Any]:
        """The common row, and what the host did during the stall (``host_state``)."""
        return {**super().truth(twin, fault), "host_state": fault.host_state}


KIND = CpuStall()
