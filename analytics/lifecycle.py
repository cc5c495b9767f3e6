"""Fault lifecycle: new findings open faults, re-detections update them, faults whose signal is gone resolve."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from c4.analytics.findings import Finding

OPERATOR_STATES = ("acknowledged", "resolved")


class FaultStateError(ValueError):
    """An operator's state change that cannot apply; ``reason`` says why: invalid, not_found or resolved."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class FaultBook:
    """The open faults, keyed by fault id, across detection runs."""

    resolve_after_runs: int = 3
    open: dict[str, dict[str, Any]] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)

    def update(
        self, findings: list[Finding], now: datetime, held: set[str] | frozenset[str] = frozenset()
    ) -> list[dict[str, Any]]:
        """Rows to append to the faults table for this run (new, updated and resolved faults).

        ``held``: open faults whose signal is out of sight but not gone (a hung job's last progress left
        the window); they stay open without a new row."""
        rows = []
        seen = set()
        for f in findings:
            seen.add(f.fault_id)
            row = f.row(now)
            prev = self.open.get(f.fault_id)
            # dated from the earliest onset any run saw (a later window may no longer hold it; late data
            # may show it earlier), and never after its detection (rows stamped by a clock a little ahead)
            onsets = [t for t in (row["first_seen"], prev and prev["first_seen"]) if t is not None]
            row["first_seen"] = min([*onsets, now]) if onsets else None
            if prev is not None:  # one fault, not a duplicate
                row["state"] = prev["state"] if prev["state"] == "acknowledged" else "open"
            self.open[f.fault_id] = row
            self.missed[f.fault_id] = 0
            rows.append(row)
        for fid in list(self.open):
            if fid in seen:
                continue
            if fid in held:
                self.missed[fid] = 0
                continue
            self.missed[fid] = self.missed.get(fid, 0) + 1
            if self.missed[fid] >= self.resolve_after_runs:  # the signal is gone: resolved
                row = {**self.open.pop(fid), "ts": now, "state": "resolved"}
                self.missed.pop(fid, None)
                rows.append(row)
        return rows

    def set_state(
        self, fault_id: str, state: str, now: datetime, latest: dict[str, Any] | None
    ) -> dict[str, Any]:
        """An operator acknowledges or resolves a fault; returns the faults row to append.

        ``latest`` is the fault's newest stored row (used when the book does not hold it, e.g. diagnosis off).
        A resolved fault leaves the book: if its signal persists, the next run opens it again.
        """
        if state not in OPERATOR_STATES:
            raise FaultStateError(
                f"state must be one of {', '.join(OPERATOR_STATES)}, not {state!r}", "invalid"
            )
        current = self.open.get(fault_id) or latest
        if current is None:
            raise FaultStateError(f"no fault with id {fault_id!r}", "not_found")
        if current.get("state") == "resolved":
            raise FaultStateError(f"fault {fault_id!r} is already resolved", "resolved")
        row = {**current, "ts": now, "state": state}
        if state == "resolved":
            self.open.pop(fault_id, None)
            self.missed.pop(fault_id, None)
        elif fault_id in self.open:
            self.open[fault_id] = row
        return row

    def load(self, latest_rows: list[dict[str, Any]]) -> None:
        """Resume from the faults table (latest row per fault id) after a restart."""
        for r in latest_rows:
            if r.get("state") in ("open", "acknowledged"):
                self.open[r["fault_id"]] = r

    def take_stored(self, rows: list[dict[str, Any]]) -> None:
        """Take in operators' acknowledge/resolve rows another collector stored (newer than the book's)."""
        for r in rows:
            if r.get("state") == "resolved":
                self.open.pop(r["fault_id"], None)
                self.missed.pop(r["fault_id"], None)
            elif r.get("state") == "acknowledged" and r["fault_id"] in self.open:
                self.open[r["fault_id"]] = {
                    **self.open[r["fault_id"]],
                    "ts": r["ts"],
                    "state": "acknowledged",
                }
