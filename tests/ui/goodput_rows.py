"""Rows for the Goodput page's tests: two jobs' accounts (as the collector writes job_accounting), the faults
they blame, and those faults' recovery actions and observations; every figure the tests check follows from here.

Job A (16 GPUs), seconds after T0: productive 0-600, hung 600-660, restarting 660-720, redone 720-900 (all three
blamed on F1, a NIC port), productive 900-1200, slowed 1200-1800 (600 s wall, 120 s lost, blamed on F2, a slow
worker). Job B (8 GPUs): productive 0-1500, unexplained 1500-1560, productive 1560-1800. An older pass of job A
(computed earlier) must not count. F3 (an Xid on job B's GPU) costs nothing in the account.
"""

from __future__ import annotations

from datetime import datetime, timedelta

T0 = datetime(2026, 1, 1, 0, 0, 0)
#: The diagnosis pass that computed the current account.
PASS = T0 + timedelta(seconds=1805)

F1 = "nic_rate:host1/mlx5_2p1"
F2 = "slow_worker:node0/gpu5"
F3 = "xid:host2/gpu3"


def at(s: float, t0: datetime = T0) -> datetime:
    """``t0`` plus ``s`` seconds."""
    return t0 + timedelta(seconds=s)


def interval(
    job, gpus, a, b, category, lost_s=None, fault=("", "", ""), run=0, computed_at=PASS, t0=T0
) -> dict:
    """One job_accounting row: [a, b) seconds after t0 of one category, blamed on (fault_id, class, component)."""
    wall = float(b - a)
    lost = 0.0 if category == "productive" else (wall if lost_s is None else float(lost_s))
    fid, cls, comp = fault
    return {
        "ts": at(a, t0),
        "node": "",
        "job": job,
        "end_ts": at(b, t0),
        "category": category,
        "wall_s": wall,
        "lost_s": lost,
        "gpus": gpus,
        "gpu_hours_lost": lost * gpus / 3600,
        "fault_id": fid,
        "fault_class": cls,
        "component": comp,
        "run": run,
        "computed_at": computed_at,
    }


NIC = (F1, "hardware", "host1/mlx5_2p1")
SLOW = (F2, "slow_worker", "node0/gpu5")


def accounting(t0=T0, jobs=("A", "B"), nic=NIC, slow=SLOW) -> list[dict]:
    """Both jobs' current accounts and job A's superseded one (times after ``t0``, faults as given)."""
    a, b = jobs
    now, old = at(1805, t0), at(1700, t0)
    return [
        interval(a, 16, 0, 600, "productive", computed_at=now, t0=t0),
        interval(a, 16, 600, 660, "hung", fault=nic, computed_at=now, t0=t0),
        interval(a, 16, 660, 720, "restarting", fault=nic, computed_at=now, t0=t0),
        interval(a, 16, 720, 900, "redone", fault=nic, run=1, computed_at=now, t0=t0),
        interval(a, 16, 900, 1200, "productive", run=1, computed_at=now, t0=t0),
        interval(a, 16, 1200, 1800, "slowed", lost_s=120, fault=slow, run=1, computed_at=now, t0=t0),
        interval(b, 8, 0, 1500, "productive", computed_at=now, t0=t0),
        interval(b, 8, 1500, 1560, "unexplained", computed_at=now, t0=t0),
        interval(b, 8, 1560, 1800, "productive", computed_at=now, t0=t0),
        # the previous pass's account of job A: superseded by the newer pass, must never count
        interval(a, 16, 0, 1700, "hung", fault=nic, computed_at=old, t0=t0),
    ]


def fault(fid, job, cls, component, first_s, ts_s, state="open", detector=None, summary="") -> dict:
    """One faults row (a diagnosis pass's view of the fault)."""
    return {
        "ts": at(ts_s),
        "node": component.split("/")[0],
        "job": job,
        "fault_id": fid,
        "detector": detector or fid.split(":")[0],
        "fault_class": cls,
        "component_type": "gpu" if "gpu" in component else "nic_port",
        "component": component,
        "first_seen": at(first_s),
        "last_seen": at(ts_s),
        "confidence": 0.9,
        "action": "none",
        "state": state,
        "summary": summary or f"{cls} on {component}",
        "evidence_json": "{}",
        "evidence_sql": "",
        "communicator": "",
        "slowdown_frac": None,
        "affected": "",
    }


def faults() -> list[dict]:
    """F1 detected 10 s after onset then resolved; F2 40 s after onset; F3 30 s after onset."""
    return [
        fault(F1, "", "hardware", "host1/mlx5_2p1", 590, 600, summary="port at half rate"),
        fault(F1, "", "hardware", "host1/mlx5_2p1", 590, 700, state="resolved", summary="port at half rate"),
        fault(F2, "A", "slow_worker", "node0/gpu5", 1190, 1230, summary="rank 5 computes 2.3x slower"),
        fault(F3, "B", "hardware", "host2/gpu3", 100, 130, summary="Xid 48"),
    ]


def action(fid, sink, outcome, s, fault_state="open") -> dict:
    """One actions row."""
    return {
        "ts": at(s),
        "node": "",
        "job": "",
        "fault_id": fid,
        "sink": sink,
        "target": "cmd",
        "fault_state": fault_state,
        "outcome": outcome,
        "attempts": 1,
        "detail": "",
    }


def actions() -> list[dict]:
    """F1: alerted at +15 s, isolated at +30 s, restarted at +70 s; F2: a dry-run isolation only."""
    return [
        action(F1, "webhook", "sent", 605),
        action(F1, "isolation", "ran", 620),
        action(F1, "restart", "ran", 660),
        action(F2, "isolation", "dry_run", 1240),
    ]


def observations() -> list[dict]:
    """F1's job back at its normal period at +310 s."""
    return [
        {
            "ts": at(900),
            "node": "",
            "job": "A",
            "fault_id": F1,
            "stage": "recovered",
            "period_s": 1.0,
            "detail": "comm c1 back at 1.0 s",
        }
    ]


#: table -> rows, in the order a store takes them.
ROWS = {
    "job_accounting": accounting,
    "faults": faults,
    "actions": actions,
    "fault_observations": observations,
}
