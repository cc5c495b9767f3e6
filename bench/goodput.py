"""``c4 bench goodput``: the collector's job accounting scored against the twin's ground truth.

Each goodput scenario (``c4.bench.goodput_scenarios``: jobs that checkpoint, hang, slow down and restart)
runs end to end as ``c4 bench diagnose`` runs its library (twin -> real samplers -> Store -> C4D), and
after every diagnosis pass the bench stores what the collector stores: the faults rows, then the job
accounts (``JobAccounts``, the collector's own code, at ``accounting_interval_s``). At the end it reads
``job_goodput`` and compares each job's measured lost time with ``JobsTwin.accounting_truth``:
``accounting_error`` = |measured - true lost time| / true lost time, per job that lost time (a job that
lost almost nothing is scored by its ETTR error instead: a ratio to nearly zero means nothing).
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

HELP = (
    "Job accounting (productive / hung / slowed / restarting / redone time per job) measured by the collector "
    "vs the twin's ground truth, on jobs that checkpoint, hang, slow down and restart: accounting_error."
)

#: A job that truly lost less than this share of its wall time is scored by ETTR error, not relative error.
MIN_LOST_SHARE = 0.01
#: Parts of lost time reported side by side (truth key -> job_goodput column).
PARTS = {
    "hung_s": "hung_s",
    "slowed_s": "slowed_s",
    "restarting_s": "restarting_s",
    "redone_s": "redone_s",
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Seeds, horizon, worker processes."""
    parser.add_argument("--seeds", type=int, default=1, help="seeds of the scenario library (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument(
        "--horizon-s", type=float, default=240.0, help="simulated seconds per scenario (default 240)"
    )
    parser.add_argument(
        "--interval-s",
        type=float,
        default=10.0,
        help="accounting_interval_s of the simulated collector (default 10; the collector's default is 60)",
    )
    parser.add_argument("--jobs", type=int, default=0, help="worker processes (default: the CPU count)")


class _CollectorPasses:
    """What the collector stores after each diagnosis pass: its faults rows, then the due job accounts."""

    def __init__(self, interval_s: float) -> None:
        from c4.analytics.account_jobs import JobAccounts

        self.accounts = JobAccounts(interval_s=interval_s)

    def on_pass(self, store, cur, now: datetime, faults: list[dict[str, Any]]) -> None:
        """Store the pass's faults rows and the accounts due."""
        from c4.collector.store import PendingBatch

        if faults:
            store.commit([PendingBatch.internal(store.catalogue["faults"], faults)])
        rows = self.accounts.account(cur, now)
        if rows:
            store.commit([PendingBatch.internal(store.catalogue["job_accounting"], rows)])

    def on_end(self, store, cur, twin) -> dict[str, Any]:
        """A last account at the end, the measured and true accounts of every job."""
        from datetime import UTC

        from c4.bench.diagnose_run import EPOCH_S
        from c4.collector.store import PendingBatch

        now = datetime.fromtimestamp(EPOCH_S + twin.t, UTC).replace(tzinfo=None)
        self.accounts.interval_s = 0.0
        rows = self.accounts.account(cur, now)
        if rows:
            store.commit([PendingBatch.internal(store.catalogue["job_accounting"], rows)])
        measured = {r["job"]: r for r in cur.execute("SELECT * FROM job_goodput").pl().to_dicts()}
        return {"measured": measured, "truth": twin.accounting_truth(twin.t)}


def run_one(sc, interval_s: float):
    """One scenario with the collector's passes (a top-level function: worker processes pickle it)."""
    from c4.bench.diagnose_run import run_scenario

    passes = _CollectorPasses(interval_s)
    return run_scenario(sc, on_pass=passes.on_pass, on_end=passes.on_end)


def score_jobs(scenario: str, extra: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per job: true vs measured lost time, its parts, the relative and ETTR errors."""
    out = []
    measured, truth = extra.get("measured", {}), extra.get("truth", {})
    for job, t in sorted(truth.items()):
        m = measured.get(job)
        true_lost, wall = float(t["lost_s"]), float(t["wall_s"])
        row: dict[str, Any] = {
            "scenario": scenario,
            "job": job,
            "true_wall_s": round(wall, 1),
            "true_lost_s": round(true_lost, 1),
            "measured_lost_s": None if m is None else round(float(m["lost_s"] or 0.0), 1),
            "true_ettr": None if t["ettr"] is None else round(float(t["ettr"]), 4),
            "measured_ettr": None if m is None or m["ettr"] is None else round(float(m["ettr"]), 4),
        }
        for part, col in PARTS.items():
            row[f"true_{part}"] = round(float(t.get(part, 0.0)), 1)
            row[f"measured_{part}"] = None if m is None else round(float(m.get(col) or 0.0), 1)
        row["measured_unexplained_s"] = None if m is None else round(float(m.get("unexplained_s") or 0.0), 1)
        scored = wall > 0 and true_lost >= MIN_LOST_SHARE * wall
        row["scored"] = scored
        if m is None:
            row["accounting_error"] = 1.0 if scored else None
            row["ettr_error"] = None
        else:
            row["accounting_error"] = (
                round(abs(float(m["lost_s"] or 0.0) - true_lost) / true_lost, 4) if scored else None
            )
            row["ettr_error"] = (
                None
                if m["ettr"] is None or t["ettr"] is None
                else round(abs(float(m["ettr"]) - float(t["ettr"])), 4)
            )
        out.append(row)
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and max accounting error over scored jobs, max ETTR error over all jobs, missing accounts."""
    import statistics

    errs = [r["accounting_error"] for r in rows if r["scored"] and r["accounting_error"] is not None]
    ettr = [r["ettr_error"] for r in rows if r["ettr_error"] is not None]
    return {
        "jobs": len(rows),
        "jobs_scored": len(errs),
        "accounting_error": {
            "median": round(statistics.median(errs), 4) if errs else None,
            "max": round(max(errs), 4) if errs else None,
        },
        "ettr_error_max": round(max(ettr), 4) if ettr else None,
        "jobs_unaccounted": sum(r["measured_lost_s"] is None for r in rows),
    }


def run(args: argparse.Namespace) -> int:
    """Run the goodput library, score every job and print the table (and the JSON line)."""
    import json
    import multiprocessing
    import os
    import sys
    import time
    from concurrent.futures import ProcessPoolExecutor

    from c4.bench.goodput_scenarios import goodput_scenarios
    from c4.report import format_table

    if args.seeds < 1 or args.horizon_s < 60 or args.interval_s < 0 or args.jobs < 0:
        print(
            "c4 bench goodput: --seeds must be >= 1, --horizon-s >= 60, --interval-s >= 0 and --jobs >= 0 "
            "(0: the CPU count)",
            file=sys.stderr,
        )
        return 2
    scenarios = [
        sc
        for seed in range(args.seed, args.seed + args.seeds)
        for sc in goodput_scenarios(seed, args.horizon_s)
    ]
    workers = args.jobs or os.cpu_count() or 1
    t0 = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        results = list(pool.map(run_one, scenarios, [args.interval_s] * len(scenarios)))
    wall = time.perf_counter() - t0
    rows = [row for r in results for row in score_jobs(r.scenario, r.extra)]
    summary = summarize(rows)
    shown = [
        {
            k: r[k]
            for k in (
                "scenario",
                "job",
                "true_lost_s",
                "measured_lost_s",
                "accounting_error",
                "true_ettr",
                "measured_ettr",
                "true_hung_s",
                "measured_hung_s",
                "true_restarting_s",
                "measured_restarting_s",
                "true_redone_s",
                "measured_redone_s",
                "true_slowed_s",
                "measured_slowed_s",
                "measured_unexplained_s",
            )
        }
        for r in rows
    ]
    print(format_table(shown))
    print()
    acc = summary["accounting_error"]
    print(
        f"{len(results)} scenarios, {summary['jobs']} jobs ({summary['jobs_scored']} lost >= "
        f"{MIN_LOST_SHARE:.0%} of their time): accounting_error median {acc['median']} / max {acc['max']}, "
        f"ETTR error max {summary['ettr_error_max']}, jobs without an account {summary['jobs_unaccounted']}; "
        f"{wall:.0f} s wall with {workers} workers"
    )
    if args.json:
        print(json.dumps({"summary": summary, "jobs": rows, "wall_s": round(wall, 1)}))
    return 0
