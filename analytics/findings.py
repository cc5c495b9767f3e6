"""What a detector returns: a finding about one component, with its evidence."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class Finding:
    """One suspected fault of one component."""

    detector: str
    fault_class: str
    component_type: str
    component: str
    node: str
    first_seen: datetime | None
    last_seen: datetime | None
    confidence: float
    action: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    evidence_sql: str = ""
    job: str = ""  # the job whose communication or step time shows it ("" for a component outside any job)
    communicator: str = ""  # the communicator (comm id/hash) the evidence comes from, when one does
    slowdown_frac: float | None = None  # the job step time it costs: (actual - without it) / without it
    affected: list[str] = field(default_factory=list)  # ranks or components that only waited on it (victims)

    @property
    def fault_id(self) -> str:
        """Stable across runs: the same detector on the same component is the same fault."""
        return f"{self.detector}:{self.component}"

    def row(self, now: datetime, state: str = "open") -> dict[str, Any]:
        """A faults-table row."""
        return {
            "ts": now,
            "node": self.node,
            "job": self.job,
            "fault_id": self.fault_id,
            "detector": self.detector,
            "fault_class": self.fault_class,
            "component_type": self.component_type,
            "component": self.component,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "confidence": self.confidence,
            "action": self.action,
            "state": state,
            "summary": self.summary,
            "evidence_json": json.dumps(self.evidence, default=str, sort_keys=True),
            "evidence_sql": self.evidence_sql,
            "communicator": self.communicator,
            "slowdown_frac": self.slowdown_frac,
            "affected": ",".join(self.affected),
        }
