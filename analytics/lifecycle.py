"""Fault lifecycle: new findings open faults, re-detections update them, faults whose signal is gone resolve."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from c4.analytics.findings import Finding


@dataclass
class FaultBook:
    """The open faults, keyed by fault id, across detection runs."""

    resolve_after_runs: int = 3
    open: dict[str, dict[str, Any]] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)

    def update(self, findings: list[Finding], now: datetime) -> list[dict[str, Any]]:
        """Rows to append to the faults table for this run (new, updated and resolved faults)."""
        rows = []
        seen = set()
        for f in findings:
            seen.add(f.fault_id)
            row = f.row(now)
            prev = self.open.get(f.fault_id)
            if prev is not None:
                row["first_seen"] = prev["first_seen"] or row["first_seen"]  # one fault, not a duplicate
                row["state"] = prev["state"] if prev["state"] == "acknowledged" else "open"
            self.open[f.fault_id] = row
            self.missed[f.fault_id] = 0
            rows.append(row)
        for fid in list(self.open):
            if fid in seen:
                continue
            self.missed[fid] = self.missed.get(fid, 0) + 1
            if self.missed[fid] >= self.resolve_after_runs:  # the signal is gone: resolved
                row = {**self.open.pop(fid), "ts": now, "state": "resolved"}
                self.missed.pop(fid, None)
                rows.append(row)
        return rows

    def load(self, latest_rows: list[dict[str, Any]]) -> None:
        """Resume from the faults table (latest row per fault id) after a restart."""
        for r in latest_rows:
            if r.get("state") in ("open", "acknowledged"):
                self.open[r["fault_id"]] = r
