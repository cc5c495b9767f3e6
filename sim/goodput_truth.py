"""Ground truth of a twin job's goodput: what its wall time went to, from its runs (``c4.sim.job_runs``).

Per job over ``[its first op's start, until_s]`` (only what happened by ``until_s`` counts: a kill after it
is not known yet), in simulated seconds. A step's *ideal* time is its time in the same run simulated
without any cause: the same seed, so the same jitter, and the checkpoint op included (saving a checkpoint
is productive). Jitter is therefore never lost time: a healthy job's ``lost_s`` is 0 up to rounding.
A step's actual time runs from the previous step's end (the last op of any rank) to its own end; the
step in progress at a run's end (its kill, or ``until_s``) has run for the time since the last one ended.

- ``productive_s``: the ideal time of every step whose work survives, each step counted once (a step done
  in a run that was later killed before checkpointing it is re-done work, not productive, there), plus, in
  the run alive at ``until_s``, the step in progress up to its ideal time;
- ``hung_s``: from when the hung step would have ended without the cause (the previous step's end plus
  its ideal time) to the kill, or to ``until_s``;
- ``restarting_s``: from a kill to the next run's first op start (or ``until_s``);
- ``redone_s``: the ideal time of the steps a killed run completed after its last checkpoint, plus the
  part of the step in progress at the kill, up to that step's ideal time;
- ``slowed_s``: the rest of ``lost_s``: completed steps' time over their ideal time, and the step in
  progress beyond its ideal time when no hang stops it;
- ``lost_s = wall_s - productive_s = hung_s + slowed_s + restarting_s + redone_s``.

Each lost second is charged to a fault (``faults``): hung time to the hang, a kill's restarting and redone
time to what killed the run (the ``job_restart`` fault, or the hang left alone for ``restart_after_s``),
slowed time to the run's slowing causes that had begun (shared equally when several did); slowed time of a
run without one (none, up to rounding) is charged to no fault.
"""

from __future__ import annotations

from typing import Any

from c4.sim.faults import Fault
from c4.sim.job_runs import TwinRun
from c4.sim.pipeline import PipelineJob

__all__ = ["PARTS", "job_accounting_truth"]

#: The parts of a job's lost time.
PARTS = ("hung_s", "slowed_s", "restarting_s", "redone_s")


class _Ledger:
    """Lost seconds by part, for the job and for each fault that explains them."""

    def __init__(self, faults: list[Fault]) -> None:
        self.parts = dict.fromkeys(PARTS, 0.0)
        self.productive_s = 0.0
        self.faults = faults
        self.by_fault: dict[int, dict[str, float]] = {}

    def charge(self, part: str, seconds: float, faults: list[Fault]) -> None:
        """Add lost seconds of one part, shared equally among the faults that explain them (if any)."""
        self.parts[part] += seconds
        for f in faults:
            row = self.by_fault.setdefault(id(f), dict.fromkeys(PARTS, 0.0))
            row[part] += seconds / len(faults)

    def fault_rows(self) -> list[dict[str, Any]]:
        """One row per fault of the job (those that cost nothing too), in the scenario's order."""
        rows = []
        for f in self.faults:
            parts = self.by_fault.get(id(f), dict.fromkeys(PARTS, 0.0))
            rows.append(
                {
                    "kind": f.kind,
                    "at_s": f.at_s,
                    "node": f.node,
                    "gpu": f.gpu,
                    "lost_s": sum(parts.values()),
                    **parts,
                }
            )
        return rows


def _account_run(led: _Ledger, spec: PipelineJob, run: TwinRun, next_start_s: float, until_s: float) -> None:
    """Add one run (and the restart after it) to the ledger."""
    killed = run.kill_s is not None and run.kill_s <= until_s
    end_s = run.kill_s if killed else until_s
    ends = [e for e in run.step_end_s if e <= end_s]
    keep = len(ends)
    if killed:  # the steps after the last checkpoint are done again by the next run
        saved = [k for k in range(len(ends)) if spec.checkpoints_at(run.first_step + k)]
        keep = saved[-1] + 1 if saved else 0
    killer = [run.killed_by] if killed and run.killed_by is not None else []
    ideal = run.truth.ideal_run_step_s
    slowed_s, prev = 0.0, run.start_s
    for k, e in enumerate(ends):
        if k < keep:
            led.productive_s += ideal[k]
        else:
            led.charge("redone_s", ideal[k], killer)
        slowed_s += (e - prev) - ideal[k]
        prev = e
    elapsed = end_s - prev
    step_ideal = ideal[len(ends)] if len(ends) < len(ideal) else elapsed
    done, extra = min(elapsed, step_ideal), max(0.0, elapsed - step_ideal)
    if killed:
        led.charge("redone_s", done, killer)
    else:
        led.productive_s += done
    hang = run.hang_at(len(ends))
    if hang is not None:
        led.charge("hung_s", extra, [hang])
    else:
        slowed_s += extra
    slowing = [f for f, c in run.causes if c.kind != "hang" and c.onset_step <= len(ends)]
    led.charge("slowed_s", slowed_s, slowing)
    if killed:
        led.charge("restarting_s", min(until_s, next_start_s) - run.kill_s, killer)


def job_accounting_truth(
    spec: PipelineJob, runs: list[TwinRun], faults: list[Fault], restart_s: float, until_s: float
) -> dict[str, Any]:
    """One job's true account over ``[its first op's start, until_s]`` (the definitions above)."""
    led = _Ledger(faults)
    start_s = runs[0].start_s
    for i, run in enumerate(runs):
        if run.start_s >= until_s:
            break
        nxt = runs[i + 1].start_s if i + 1 < len(runs) else (run.kill_s or 0.0) + restart_s
        _account_run(led, spec, run, nxt, until_s)
    wall_s = max(0.0, until_s - start_s)
    lost_s = wall_s - led.productive_s
    return {
        "start_s": start_s,
        "until_s": until_s,
        "wall_s": wall_s,
        "productive_s": led.productive_s,
        "lost_s": lost_s,
        **led.parts,
        "ettr": led.productive_s / wall_s if wall_s else None,
        "gpus": spec.world,
        "runs": sum(1 for r in runs if r.start_s < until_s),
        "run_spans": [
            {
                "run": r.index,
                "first_step": r.first_step,
                "start_s": r.start_s,
                "kill_s": r.kill_s if r.kill_s is not None and r.kill_s <= until_s else None,
                "killed_by": r.killed_by.kind
                if r.killed_by and r.kill_s is not None and r.kill_s <= until_s
                else "",
            }
            for r in runs
            if r.start_s < until_s
        ],
        "faults": led.fault_rows(),
    }
