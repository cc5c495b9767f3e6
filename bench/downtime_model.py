"""One long training job under published fault rates, recovered by a policy: a discrete-event model of its downtime.

Faults arrive as Poisson processes, one per cause, in the job's running time (a part fails while the job uses
it), so the same seed gives every policy the same fault sequence. A fail-stop fault costs: time until the job's
failure is noticed (detect), until the faulty part is named (localize), until it is drained (isolate), the
restart (re-scheduling + job init), and the work done since the last checkpoint, re-done. A fail-slow fault keeps
the job running at 1/factor speed until it is noticed; then it is isolated and the job restarted like a fail-stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from c4.bench.downtime_rates import FAIL_SLOW, FaultClass

STAGES = ("detect", "localize", "isolate", "restart")


@dataclass(frozen=True)
class Timings:
    """The recovery times and job settings every policy shares or picks from (all in seconds)."""

    watchdog_s: float  # a hung collective is aborted after this (framework default)
    manual_diagnosis_s: float  # operators name and drain the faulty part by hand
    ras_localize_s: (
        float  # operators read NCCL RAS / Flight Recorder output that names the rank, and drain it
    )
    c4_isolate_s: float  # C4's automatic drain after its finding
    restart_s: float  # re-scheduling + job init + checkpoint load
    checkpoint_s: float  # checkpoint interval, in progress of the job
    fail_slow_notice_s: float  # running time until operators notice a fail-slow without C4
    fail_slow_factor: float  # step time multiplier while a fail-slow lasts


@dataclass(frozen=True)
class Policy:
    """A recovery policy: for each fault class, its stage durations; for fail-slow, the time until noticed."""

    name: str
    stop_stages_s: dict[str, dict[str, float]]  # class name -> stage -> seconds
    slow_notice_s: float
    slow_stages_s: dict[str, float]  # stages after a fail-slow is noticed (detect is the notice itself)


@dataclass
class Account:
    """Where one job's wall time went (seconds); productive + downtime = wall."""

    wall_s: float
    running_s: float = 0.0
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    lost_s: float = 0.0  # work since the last checkpoint, re-done after a restart
    slowed_s: float = 0.0  # running time lost to fail-slow (running x (1 - 1/factor))
    faults: dict[str, int] = field(default_factory=dict)
    fail_slow_overlapped: int = 0  # a fail-slow arriving while one is active: counted, not compounded

    @property
    def productive_s(self) -> float:
        """Running time that moved training forward for good."""
        return self.running_s - self.lost_s - self.slowed_s

    @property
    def downtime_s(self) -> float:
        """Wall time not productive: recovery stages, re-done work and slowdown."""
        return self.wall_s - self.productive_s

    @property
    def ettr(self) -> float:
        """Effective training time ratio: productive over wall."""
        return self.productive_s / self.wall_s


def build_policies(
    t: Timings, classes: list[FaultClass], c4_detect_s: dict[str, float | None]
) -> list[Policy]:
    """The three policies side by side: framework default, NCCL RAS + Flight Recorder, and C4.

    ``c4_detect_s``: per class name, C4's measured time to detect (None: C4D does not see that class, which then
    falls back to the RAS policy). Restart cost is the same for all three: only finding the fault differs.
    """
    default = {
        c.name: {"detect": t.watchdog_s, "localize": t.manual_diagnosis_s, "isolate": 0.0} for c in classes
    }
    ras = {
        c.name: {"detect": t.watchdog_s, "localize": t.ras_localize_s, "isolate": 0.0}
        if c.ras_localizes
        else dict(default[c.name])
        for c in classes
    }
    c4 = {
        c.name: {"detect": float(s), "localize": 0.0, "isolate": t.c4_isolate_s}
        if (s := c4_detect_s.get(c.name)) is not None
        else dict(ras[c.name])
        for c in classes
    }
    for table in (default, ras, c4):
        for stages in table.values():
            stages["restart"] = t.restart_s
    manual_slow = {"localize": t.manual_diagnosis_s, "isolate": 0.0, "restart": t.restart_s}
    c4_slow_s = c4_detect_s.get(FAIL_SLOW.name)
    return [
        Policy("framework_default", default, t.fail_slow_notice_s, manual_slow),
        Policy(
            "nccl_ras_flight_recorder", ras, t.fail_slow_notice_s, dict(manual_slow)
        ),  # blind to slow links
        Policy(
            "c4",
            c4,
            t.fail_slow_notice_s if c4_slow_s is None else float(c4_slow_s),
            dict(manual_slow)
            if c4_slow_s is None
            else {"localize": 0.0, "isolate": t.c4_isolate_s, "restart": t.restart_s},
        ),
    ]


def simulate(
    policy: Policy,
    rates_per_s: dict[str, float],
    wall_s: float,
    checkpoint_s: float,
    slow_factor: float,
    seed: int,
) -> Account:
    """One job of ``wall_s`` under ``policy``; faults per class at ``rates_per_s`` (per second of running time)."""
    if wall_s <= 0 or checkpoint_s <= 0 or slow_factor < 1:
        raise ValueError("wall_s and checkpoint_s must be > 0 and slow_factor >= 1")
    names = [n for n, r in rates_per_s.items() if r > 0]
    total = sum(rates_per_s[n] for n in names)
    weights = np.array([rates_per_s[n] for n in names]) / total if total else None
    rng = np.random.default_rng(seed)
    acc = Account(wall_s=wall_s)
    wall = 0.0
    run = 0.0  # running clock
    progress = 0.0  # progress since the last checkpoint (s of full-speed work)
    next_fault = run + rng.exponential(1 / total) if total else math.inf
    slow_until = math.inf  # running clock at which an active fail-slow is noticed

    def recover(stages: dict[str, float]) -> None:
        nonlocal wall, progress
        for stage in STAGES:
            d = min(stages.get(stage, 0.0), wall_s - wall)
            acc.stage_s[stage] += d
            wall += d
        acc.lost_s += progress
        progress = 0.0

    while wall < wall_s:
        event = min(next_fault, slow_until)
        span = min(event - run, wall_s - wall)
        slow = slow_until < math.inf
        acc.running_s += span
        if slow:
            acc.slowed_s += span * (1 - 1 / slow_factor)
        progress = (progress + span / (slow_factor if slow else 1.0)) % checkpoint_s
        run += span
        wall += span
        if wall >= wall_s:
            break
        if event == slow_until:  # the fail-slow is noticed: isolate its part and restart
            slow_until = math.inf
            recover(policy.slow_stages_s)
            continue
        name = names[int(rng.choice(len(names), p=weights))]
        acc.faults[name] = acc.faults.get(name, 0) + 1
        if name == FAIL_SLOW.name:
            if slow_until < math.inf:
                acc.fail_slow_overlapped += 1
            else:
                slow_until = run + policy.slow_notice_s
        else:
            recover(policy.stop_stages_s[name])
        next_fault = run + rng.exponential(1 / total)
    return acc


def expected_lost_s(rate_per_s: float, checkpoint_s: float) -> float:
    """Closed form of the mean work lost per fault: E[T mod C] for T ~ Exp(rate) (checkpoints every C of running)."""
    if rate_per_s <= 0:
        return 0.0
    x = rate_per_s * checkpoint_s
    return 1 / rate_per_s - checkpoint_s * math.exp(-x) / -math.expm1(-x)


def closed_form_ettr(policy: Policy, rates_per_s: dict[str, float], checkpoint_s: float) -> float | None:
    """Renewal-reward ETTR for fail-stop faults only (None when fail-slow is modelled): E[productive]/E[cycle]."""
    if rates_per_s.get(FAIL_SLOW.name, 0) > 0:
        return None
    total = sum(rates_per_s.values())
    if total <= 0:
        return 1.0
    mean_down_s = sum(
        r / total * sum(policy.stop_stages_s[n].values()) for n, r in rates_per_s.items() if r > 0
    )
    mean_run_s = 1 / total
    return (mean_run_s - expected_lost_s(total, checkpoint_s)) / (mean_run_s + mean_down_s)


def mean_ci95(values: list[float]) -> tuple[float, float, float]:
    """Mean and a normal-approximation 95% confidence interval of the mean over seeds."""
    a = np.asarray(values, dtype=float)
    mean = float(a.mean())
    half = 1.96 * float(a.std(ddof=1)) / math.sqrt(len(a)) if len(a) > 1 else 0.0
    return mean, mean - half, mean + half
