"""A twin job's runs: its first launch and every relaunch after a kill, each simulated op by op.

A run is killed by a ``job_restart`` fault at its time (an operator's or C4's restart, or a crash), or,
when the job has ``restart_after_s``, ``restart_after_s`` after its last op ended once a hang stopped it.
``restart_s`` after the kill the next run starts: it resumes from the last step that ended with a checkpoint
before the kill (step 0 when none), so the steps done since are done again under the same numbers, with
its own jitter (the seed of the job and the run number). Simplification: whatever slowed or stopped a killed
run is gone in the next one, all its causes with it: the faulty node was drained and a spare of the same
name (same GPUs, same process ids) took its place. A ``job_restart`` whose time falls between two runs, or
at a run's first op, does nothing (the job is already relaunching); it still has its truth row, costing 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from c4.sim.faults import Fault
from c4.sim.pipeline import Cause, PipelineJob, PipelineTruth, simulate

__all__ = ["RUN_SEED_STRIDE", "TwinRun", "simulate_runs"]

#: Seed distance between two runs of a job (each run draws its own jitter).
RUN_SEED_STRIDE = 100_003


@dataclass
class TwinRun:
    """One run of a job: where it resumed, its causes, its ops (those that ended by the kill), its truth."""

    index: int  # 0 for the first launch, +1 per relaunch
    first_step: int  # the step it starts with (the one after the last checkpoint)
    start_s: float  # its first op's start (simulated seconds)
    causes: list[tuple[Fault, Cause]]  # what acts on it (onset_step counted from first_step)
    trace: pl.DataFrame  # its ops that ended by the kill, sorted by end, with a ``run`` column
    truth: PipelineTruth
    kill_s: float | None = None  # when it was killed (None: it runs to the horizon)
    killed_by: Fault | None = None  # the job_restart fault, or the hang left for restart_after_s

    @property
    def step_end_s(self) -> list[float]:
        """When each of its steps ended (completed ones only; none after the kill)."""
        ends = self.start_s + np.cumsum(self.truth.step_s)
        return [float(e) for e in ends if self.kill_s is None or e <= self.kill_s]

    @property
    def last_end_s(self) -> float:
        """When its last op ended (its start when it has none)."""
        return float(self.trace["end_s"].max()) if self.trace.height else self.start_s

    def hang_at(self, step: int) -> Fault | None:
        """The fault whose hang stops this run at its local step ``step`` (None: no hang there)."""
        for f, c in self.causes:
            if c.kind == "hang" and c.onset_step == step:
                return f
        return None

    @property
    def hung(self) -> bool:
        """Whether a hang stops this run before its kill (or the horizon)."""
        return self.hang_at(len(self.step_end_s)) is not None

    def ideal_step_start_s(self, step: int) -> float:
        """When its local step ``step`` would start without its causes."""
        ideal = self.truth.ideal_run_step_s
        return self.start_s + float(sum(ideal[:step]))


def _probe_step_s(spec: PipelineJob, seed: int) -> float:
    """The job's shortest step (two steps without causes): how many steps cover a stretch of time."""
    _, probe = simulate(spec, 2, seed=seed, t0_s=0.0)
    return min(probe.step_s)


def simulate_runs(
    spec: PipelineJob,
    causes: list[tuple[Fault, Cause]],
    restarts: list[Fault],
    horizon_s: float,
    seed: int,
    restart_after_s: float | None = None,
    restart_s: float = 30.0,
) -> list[TwinRun]:
    """The job's runs over ``[0, horizon_s)``: each cause acts in the run alive at its ``at_s`` (or, between
    runs, the next one, from its first step); a kill ends the run and removes its causes."""
    step_s = _probe_step_s(spec, seed)
    pending = sorted(causes, key=lambda fc: fc[0].at_s)
    kills = sorted(restarts, key=lambda f: f.at_s)
    runs: list[TwinRun] = []
    t0, first = 0.0, 0
    while t0 < horizon_s:
        index = len(runs)
        planned = next((f for f in kills if f.at_s > t0), None)  # a restart that falls in the gap: nothing
        bound = min(horizon_s, planned.at_s) if planned else horizon_s
        use = [fc for fc in pending if fc[0].at_s < bound]
        while True:
            steps = math.ceil((bound - t0) / step_s) + 2
            mine = [(f, replace(c)) for f, c in use]  # onset steps are this run's
            trace, truth = simulate(
                spec,
                steps,
                [c for _, c in mine],
                seed=seed + RUN_SEED_STRIDE * index,
                t0_s=t0,
                first_step=first,
                onsets_at_s=[max(f.at_s, t0) for f, _ in mine],
            )
            trace = trace.with_columns(
                (pl.col("start_s") + pl.col("duration_s")).alias("end_s"), pl.lit(index).alias("run")
            ).sort("end_s")
            kill, by = (planned.at_s, planned) if planned and planned.at_s < horizon_s else (None, None)
            hang = next(
                (f for f, c in mine if c.kind == "hang" and c.onset_step < len(truth.ideal_run_step_s)), None
            )
            if hang is not None and restart_after_s is not None and trace.height:
                at = float(trace["end_s"].max()) + restart_after_s
                if at < horizon_s and (kill is None or at < kill):
                    kill, by = at, hang
            late = [fc for fc in use if kill is not None and fc[0].at_s >= kill]
            if not late:  # a cause that came after the kill must not shape the run: simulate again without it
                break
            use = [fc for fc in use if fc not in late]
        if kill is not None:
            trace = trace.filter(pl.col("end_s") <= kill)
        run = TwinRun(index, first, t0, mine, trace, truth, kill, by)
        runs.append(run)
        if kill is None:
            break
        pending = [fc for fc in pending if fc[0].at_s >= kill]
        saved = [k for k in range(len(run.step_end_s)) if spec.checkpoints_at(first + k)]
        first = first + saved[-1] + 1 if saved else first
        t0 = kill + restart_s
    return runs
