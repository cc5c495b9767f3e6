"""Remediation that closes the loop: fill and run isolation / job-restart commands, once per fault, with holds.

Both steps record one ``actions`` row per fault: ran, failed (with the output's excerpt), dry_run or held.
"Once" is decided by the store: the fault ids that already have a ran/failed/dry_run row of the step are
loaded at start (``done``), so a collector restart never runs a step twice; a held step stays pending
(``held``, also loaded at start) and runs once its hold lifts: at the next detection of the fault, or at
once when an operator releases the hold (``pending``).
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger("c4.analytics.remediation")

#: The longest command output kept in an actions row, in characters.
DETAIL_MAX_CHARS = 500

#: Outcomes that count as "the step was taken" (a held step is not: it runs once the hold lifts).
TAKEN_OUTCOMES = ("ran", "failed", "dry_run")

#: Recommended actions whose fault drains its node (the isolation step).
ACTIONS_THAT_DRAIN = ("drain_node", "replace_gpu")

#: Recommended actions whose fault makes C4 restart the job (after isolating the node, when it drains).
ACTIONS_THAT_RESTART = ("drain_node", "replace_gpu", "restart_job")


def command_argv(template: str, fault: dict[str, Any], job: str) -> list[str]:
    """The argv of ``template`` (shell words, each filled with the fault's node, job, fault_id, component, reason)."""
    values = {
        "node": fault.get("node") or "",
        "job": job,
        "fault_id": fault["fault_id"],
        "component": fault.get("component") or "",
        "reason": f"C4:{fault['fault_id']}",
    }
    return [word.format(**values) for word in shlex.split(template)]


def run_command(argv: list[str], timeout_s: float) -> tuple[str, str]:
    """Run ``argv`` (no shell); returns (ran | failed, its output or error, cut to DETAIL_MAX_CHARS)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return "failed", f"timed out after {timeout_s:g} s"
    except OSError as exc:
        return "failed", str(exc)[:DETAIL_MAX_CHARS]
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode == 0:
        return "ran", output[:DETAIL_MAX_CHARS] or "exit 0"
    return "failed", f"exit {proc.returncode}: {output}"[:DETAIL_MAX_CHARS]


class HoldPolicy(Protocol):
    """What a remediation step asks before it runs: why ``job`` is held ('' when it is not)."""

    def reason(self, job: str) -> str:
        """Why remediation is held for ``job``, or ''."""
        ...


@dataclass
class Hold:
    """The collector config's hold on remediation: cluster-wide, or for some jobs (see holds.HoldBook for
    operators' holds at run time)."""

    cluster: bool = False
    jobs: frozenset[str] = frozenset()

    def reason(self, job: str) -> str:
        """Why remediation is held for ``job``, or '' when it may run."""
        if self.cluster:
            return "held cluster-wide (remediation_hold)"
        if job and job in self.jobs:
            return f"job {job} is held (remediation_hold_jobs)"
        return ""


@dataclass
class RemediationStep:
    """One remediation step (``isolation`` or ``restart``): a command template run once per fault it applies to."""

    sink: str
    template: str
    applies_to: tuple[str, ...]
    dry_run: bool = True
    hold: HoldPolicy = field(default_factory=Hold)  # the config's Hold, or holds.HoldBook
    timeout_s: float = 60.0
    needs_job: bool = False
    job_of: Callable[[dict[str, Any]], str] = lambda fault: fault.get("job") or ""
    done: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)  # held faults already recorded as such
    # one caller at a time: a diagnosis pass and an operator's release may both offer a fault
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def load(self, taken_fault_ids: Iterable[str], held_fault_ids: Iterable[str] = ()) -> None:
        """Faults this step was already taken for (never again) and held for (recorded once), from the
        store's actions rows."""
        self.done.update(taken_fault_ids)
        self.held.update(held_fault_ids)

    def pending(self) -> set[str]:
        """Faults this step was held for and has not taken yet."""
        with self.lock:
            return self.held - self.done

    def apply(self, faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take the step for each newly open fault it applies to; returns the actions rows."""
        with self.lock:
            return self._apply(faults)

    def _apply(self, faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for fault in faults:
            if fault["state"] != "open" or fault["action"] not in self.applies_to:
                continue
            if fault["fault_id"] in self.done:
                continue
            row = self._take(fault)
            if row["outcome"] == "held":
                if fault["fault_id"] in self.held:
                    continue  # recorded once; it runs when the hold lifts
                self.held.add(fault["fault_id"])
            rows.append(row)
        return rows

    def _take(self, fault: dict[str, Any]) -> dict[str, Any]:
        job = self.job_of(fault)
        argv = command_argv(self.template, fault, job)
        held = self.hold.reason(job)
        if held:
            outcome, detail = "held", f"{held}; would run: {shlex.join(argv)}"
        elif self.needs_job and not job:
            outcome, detail = "failed", "no job known for this fault's node: nothing to restart"
            self.done.add(fault["fault_id"])
        elif self.dry_run:
            outcome, detail = "dry_run", "would run: " + shlex.join(argv)
            self.done.add(fault["fault_id"])
        else:
            self.done.add(fault["fault_id"])  # before running: a crash mid-command must not repeat it
            outcome, detail = run_command(argv, self.timeout_s)
        log.info(
            "remediation step=%s fault_id=%s node=%s job=%s outcome=%s",
            self.sink,
            fault["fault_id"],
            fault.get("node"),
            job,
            outcome,
        )
        return {
            "ts": datetime.now(UTC).replace(tzinfo=None),
            "node": fault.get("node") or "",
            "job": job,
            "fault_id": fault["fault_id"],
            "sink": self.sink,
            "target": shlex.join(argv),
            "fault_state": "open",
            "outcome": outcome,
            "attempts": 0 if outcome == "held" else 1,
            "detail": detail[:DETAIL_MAX_CHARS],
        }


def taken_sql(sink: str) -> str:
    """The fault ids a step (``sink``) was already taken for, from the actions table."""
    outcomes = ", ".join(f"'{o}'" for o in TAKEN_OUTCOMES)
    return f"SELECT DISTINCT fault_id FROM actions WHERE sink = '{sink}' AND outcome IN ({outcomes})"


def held_sql(sink: str) -> str:
    """The fault ids a step (``sink``) was held for, from the actions table."""
    return f"SELECT DISTINCT fault_id FROM actions WHERE sink = '{sink}' AND outcome = 'held'"


def apply_in_order(steps: Sequence[RemediationStep], faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Take ``steps`` (isolation, then restart) for ``faults``; returns the actions rows.

    A later step never runs for a fault an earlier step still holds: a hold released between the two
    steps of one pass would otherwise restart the job before its node was drained. Such a fault is
    left to the release, which takes both steps in order; while the hold stands the later step still
    records its own ``held`` row."""
    rows: list[dict[str, Any]] = []
    waiting: set[str] = set()
    for step in steps:
        ready = [f for f in faults if f["fault_id"] not in waiting or step.hold.reason(step.job_of(f))]
        rows += step.apply(ready)
        waiting |= step.pending()
    return rows
