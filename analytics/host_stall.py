"""What the stalled rank's host and GPU did during a CPU-side stall: host CPU (busy, I/O wait, idle) and GPU idleness.

A ``cpu_stall`` finding from the step trace says only that a rank started its GPU work late. Whether its
host was busy (data loader, garbage collection, Python overhead), waiting on storage (checkpoint or
dataset reads: iowait) or neither (another process, a lock) decides where the operator looks; the GPU's
utilisation over the same steps shows what the stall cost it. Both come from tables the agent already
writes: ``host_cpu`` (raw /proc/stat counters, differenced here) and ``gpu_samples.util_gpu_pct``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import polars as pl

from c4.analytics.findings import Finding

#: Share of all CPU time in user+system (incl. nice, irq, softirq) above which the host counts as busy:
#: a data loader or GC that starves the GPU keeps the host's cores running; a healthy training host
#: spends well under this (its ranks' main threads, a few loader workers).
BUSY_FRAC = 0.8
#: Share of all CPU time in iowait above which the stall is put on storage: 10% of a 128-CPU host is
#: 13 CPUs' worth of tasks blocked on reads or writes, far above a training host's usual <1%.
IOWAIT_FRAC = 0.1
#: /proc/stat's CPU-time columns as the host sampler stores them (user includes nice, system irq+softirq).
CPU_COLUMNS = ("user_s", "system_s", "idle_s", "iowait_s", "steal_s")


def stall_window(f: Finding) -> tuple[datetime, datetime] | None:
    """[first stalled step's start, last stalled step's end) of a finding (None without its times)."""
    if f.first_seen is None or f.last_seen is None:
        return None
    return f.first_seen, f.last_seen + timedelta(seconds=float(f.evidence.get("step_s") or 0.0))


def host_cpu_shares(
    host_cpu: pl.DataFrame, node: str, start: datetime, end: datetime
) -> dict[str, Any] | None:
    """Shares of the host's CPU time (all CPUs) over the sampling intervals that overlap [start, end].

    Counters are differenced between consecutive samples of the host; an interval where a counter went
    backwards (a reboot) is left out and counted in ``intervals_reset``. None: no interval overlaps.
    """
    if host_cpu.is_empty() or not set(CPU_COLUMNS) <= set(host_cpu.columns):
        return None
    rows = host_cpu.filter(pl.col("node") == node)
    if "cpu" in rows.columns:
        whole = rows.filter(pl.col("cpu") == "all")
        # a store that kept only per-CPU rows: their sum is the host's
        rows = whole if not whole.is_empty() else rows.group_by("ts").agg(pl.col(CPU_COLUMNS).sum())
    rows = rows.sort("ts").unique("ts", keep="last", maintain_order=True)
    deltas = rows.select(
        pl.col("ts").shift(1).alias("since"), pl.col("ts"), *(pl.col(c).diff().alias(c) for c in CPU_COLUMNS)
    ).filter(pl.col("since").is_not_null() & (pl.col("since") < end) & (pl.col("ts") > start))
    if deltas.is_empty():
        return None
    reset = pl.any_horizontal(pl.col(c) < 0 for c in CPU_COLUMNS)
    kept = deltas.filter(~reset)
    sums = {c: float(kept[c].sum()) for c in CPU_COLUMNS}
    total = sum(sums.values())
    out: dict[str, Any] = {"intervals": kept.height, "intervals_reset": deltas.height - kept.height}
    if total <= 0:
        return out | {"cpu_s": 0.0}
    out |= {f"{c[:-2]}_frac": round(v / total, 4) for c, v in sums.items()}
    out["busy_frac"] = round((sums["user_s"] + sums["system_s"]) / total, 4)
    out["cpu_s"] = round(total, 3)
    return out


def gpu_idle(
    gpu_samples: pl.DataFrame, gpus: list[str], start: datetime, end: datetime
) -> dict[str, Any] | None:
    """Mean NVML utilisation of the stalled ranks' GPUs (``<host>/gpu<i>``) over (start, end]; None: no sample."""
    if gpu_samples.is_empty() or not gpus or "util_gpu_pct" not in gpu_samples.columns:
        return None
    keys = pl.DataFrame(
        [(g.split("/gpu")[0], int(g.split("/gpu")[1])) for g in gpus if g.rsplit("/gpu", 1)[-1].isdigit()],
        schema={"node": pl.String, "gpu_index": pl.Int64},
        orient="row",
    )
    util = (
        gpu_samples.filter(
            (pl.col("ts") > start) & (pl.col("ts") <= end)
        )  # NVML: the util of the period up to ts
        .with_columns(pl.col("gpu_index").cast(pl.Int64))
        .join(keys, on=["node", "gpu_index"], how="semi")["util_gpu_pct"]
        .drop_nulls()
    )
    if util.is_empty():
        return None
    mean = float(util.mean())
    return {
        "gpu_util_pct_mean": round(mean, 1),
        "gpu_idle_frac": round(1 - mean / 100, 4),
        "gpu_samples": util.len(),
    }


def host_verdict(cpu: dict[str, Any] | None) -> str:
    """``busy``, ``iowait``, ``idle`` (neither), or ``no_data`` for a host's CPU shares over a stall."""
    if not cpu or "busy_frac" not in cpu:
        return "no_data"
    if cpu["busy_frac"] >= BUSY_FRAC:
        return "busy"
    return "iowait" if cpu["iowait_frac"] >= IOWAIT_FRAC else "idle"


def _sentence(verdict: str, host: str, cpu: dict[str, Any] | None, gpu: dict[str, Any] | None) -> str:
    """What the operator reads: the host's state, the GPU's idleness and where to look."""
    idle = (
        f"GPU idle {gpu['gpu_idle_frac']:.0%} of the stall"
        if gpu
        else "no GPU utilisation samples of its GPU"
    )
    if verdict == "no_data":
        return f"no host CPU samples from {host or 'its host'} over the stall (is the host sampler running?); {idle}"
    assert cpu is not None
    if verdict == "busy":
        return (
            f"host {host} busy {cpu['busy_frac']:.0%} (user+system), {idle}: the CPU side starves the GPU "
            "(data loader workers, garbage collection, Python overhead; profile the rank's process)"
        )
    if verdict == "iowait":
        return (
            f"host {host} in I/O wait {cpu['iowait_frac']:.0%} (busy {cpu['busy_frac']:.0%}), {idle}: the rank "
            "waits on storage (checkpoint writes or dataset reads)"
        )
    return (
        f"host {host} idle too (busy {cpu['busy_frac']:.0%}, iowait {cpu['iowait_frac']:.0%}), {idle}: "
        "a single saturated thread (a GIL-bound loader, GC) does not show across a whole host, nor does "
        "waiting on another process, a lock or the network; profile the rank's process"
    )


def joined_with_host(
    found: list[Finding], host_cpu: pl.DataFrame, gpu_samples: pl.DataFrame
) -> list[Finding]:
    """Each step-trace ``cpu_stall`` gets its host's CPU and its GPUs' idleness over the stalled steps as
    evidence (``host_cpu``, ``gpu``, ``host_verdict``) and in its summary; other findings are untouched.

    The class and its software action stay; a host with no samples is said so, never an error.
    """
    for f in found:
        if f.detector != "step_attribution" or f.fault_class != "cpu_stall":
            continue
        window = stall_window(f)
        host = f.node or (f.component.split("/")[0] if f.component.endswith("/cpu") else "")
        cpu = host_cpu_shares(host_cpu, host, *window) if window and host else None
        gpu = gpu_idle(gpu_samples, list(f.evidence.get("gpus") or []), *window) if window else None
        verdict = host_verdict(cpu)
        f.evidence.update(host_cpu=cpu, gpu=gpu, host_verdict=verdict)
        f.summary += f"; {_sentence(verdict, host, cpu, gpu)}"
    return found
