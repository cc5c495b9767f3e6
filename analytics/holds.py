"""Holds on remediation: the config's (fixed at start) and operators' (set and released at run time).

A hold is cluster-wide or for one job. The collector config's holds (``remediation_hold``,
``remediation_hold_jobs``) last until the config changes and the collector restarts; operators' holds
come and go through the SetHold RPC (``c4 faults hold`` / ``release``), are stored in the
``remediation_holds`` table and loaded again at start. Remediation is held for a job while any hold
covers it. Thread-safe: remediation steps ask from worker threads while the event loop sets holds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from c4.analytics.remediation import Hold

SCOPES = ("cluster", "job")


@dataclass(frozen=True)
class HoldEntry:
    """One hold in force: its scope and job ('' for cluster), where it comes from, who set it and why."""

    scope: str
    job: str
    source: str  # "operator" or "config"
    by: str = ""
    note: str = ""
    since: datetime | None = None  # UTC; None for a config hold

    def describe(self) -> str:
        """'cluster-wide' or 'job J', for messages."""
        return "cluster-wide" if self.scope == "cluster" else f"job {self.job}"


@dataclass(frozen=True)
class HoldChange:
    """What one hold/release request did: the row to store (None: nothing changed) and a message."""

    row: dict[str, Any] | None
    message: str

    @property
    def changed(self) -> bool:
        """Whether an operator hold was set or released."""
        return self.row is not None


class HoldBook:
    """The holds in force: the config's (``config``) and operators' (keyed by scope and job)."""

    def __init__(self, config: Hold | None = None) -> None:
        self.config = config or Hold()
        self._operator: dict[tuple[str, str], HoldEntry] = {}
        self._lock = threading.Lock()
        self._last_ts: datetime | None = None

    def load(self, rows: list[dict[str, Any]]) -> None:
        """Operators' holds from the store: the newest ``remediation_holds`` row per (scope, job) that holds."""
        with self._lock:
            for r in sorted(rows, key=lambda r: r["ts"]):
                key = (r["scope"], r["job"] or "")
                if r["hold"]:
                    self._operator[key] = HoldEntry(
                        key[0], key[1], "operator", r.get("set_by") or "", r.get("note") or "", r["ts"]
                    )
                else:
                    self._operator.pop(key, None)
                self._last_ts = max(self._last_ts or r["ts"], r["ts"])

    def reload(self, current_rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
        """Replace operators' holds by the ones in force in the store (``remediation_holds_current``,
        which other collectors on a lake also write); returns the (scope, job) released meanwhile."""
        fresh = HoldBook()
        fresh.load(current_rows)
        with self._lock:  # swapped at once: a step asking meanwhile never sees a hold missing
            released = set(self._operator) - set(fresh._operator)
            self._operator = fresh._operator
            if fresh._last_ts is not None:
                self._last_ts = max(self._last_ts or fresh._last_ts, fresh._last_ts)
        return released

    def reason(self, job: str) -> str:
        """Why remediation is held for ``job``, or '' when it may run (what a remediation step asks)."""
        config = self.config.reason(job)
        if config:
            return config
        with self._lock:
            entry = self._operator.get(("cluster", "")) or (self._operator.get(("job", job)) if job else None)
        if entry is None:
            return ""
        who = f" by {entry.by}" if entry.by else ""
        note = f" ({entry.note})" if entry.note else ""
        return f"{entry.describe()} held{who} (c4 faults hold){note}"

    def holds(self) -> list[HoldEntry]:
        """Every hold in force: the config's first, then operators' by scope and job."""
        out = []
        if self.config.cluster:
            out.append(HoldEntry("cluster", "", "config", "collector config", "remediation_hold = true"))
        out += [
            HoldEntry("job", j, "config", "collector config", "remediation_hold_jobs")
            for j in sorted(self.config.jobs)
        ]
        with self._lock:
            out += [self._operator[k] for k in sorted(self._operator)]
        return out

    def change(self, scope: str, job: str, hold: bool, by: str, note: str, now: datetime) -> HoldChange:
        """Set (hold) or release an operator hold; returns the row to store, which ``apply`` then takes in.

        Nothing changes (row None) when the hold already is as asked. A config hold is never released
        here: the message says so.
        """
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        key = (scope, job if scope == "job" else "")
        what = "cluster-wide" if scope == "cluster" else f"job {job}"
        with self._lock:
            current = self._operator.get(key)
            last = self._last_ts
        # strictly after the previous row: the newest row per (scope, job) is the state at start
        ts = now if last is None or now > last else last + timedelta(microseconds=1)
        still = self._config_note(scope, key[1])
        if hold and current is not None:
            since = f" since {current.since:%Y-%m-%d %H:%M:%S} UTC" if current.since else ""
            return HoldChange(None, f"remediation is already held {what}{since}: nothing changed")
        if not hold and current is None:
            return HoldChange(None, f"no operator hold {what}: nothing released" + still)
        row = {"ts": ts, "scope": scope, "job": key[1], "hold": hold, "set_by": by, "note": note}
        if hold:
            return HoldChange(row, f"remediation held {what}")
        with self._lock:
            jobs = sorted(j for s, j in self._operator if s == "job")
        left = f"; jobs still held by operators: {', '.join(jobs)}" if scope == "cluster" and jobs else ""
        return HoldChange(row, f"remediation released {what}" + still + left)

    def apply(self, row: dict[str, Any]) -> None:
        """Take in a stored hold/release row (after it is committed)."""
        self.load([row])

    def _config_note(self, scope: str, job: str) -> str:
        """'; ... still held by the config' when the config holds what a release names."""
        if self.config.cluster:
            return (
                "; remediation stays held cluster-wide by the collector config (remediation_hold = true), "
                "which only a config change and a collector restart lift"
            )
        if scope == "job" and job in self.config.jobs:
            return (
                f"; job {job} stays held by the collector config (remediation_hold_jobs), which only a "
                "config change and a collector restart lift"
            )
        return ""
