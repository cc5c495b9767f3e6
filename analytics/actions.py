"""Announcing faults: alert sinks (Alertmanager v2, generic JSON webhook, Slack); isolation and restart are
remediation.py's."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger("c4.analytics.actions")


#: Per sink, target and fault, the newest state the sink accepted (outcome sent), from the actions table.
SENT_SQL = (
    "SELECT sink, target, fault_id, arg_max(fault_state, ts) FROM actions WHERE outcome = 'sent' "
    "GROUP BY sink, target, fault_id"
)


class Sink(Protocol):
    """Something that announces a fault."""

    name: str
    target: str

    def payload(self, fault: dict[str, Any]) -> Any:
        """The JSON body for one fault row."""
        ...


def _iso(ts: Any) -> str:
    if isinstance(ts, datetime):
        return ts.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class AlertmanagerSink:
    """Prometheus Alertmanager v2: POST /api/v2/alerts with labels, annotations, startsAt/endsAt."""

    base_url: str
    name: str = "alertmanager"

    @property
    def target(self) -> str:
        """The alerts endpoint."""
        return self.base_url.rstrip("/") + "/api/v2/alerts"

    def payload(self, fault: dict[str, Any]) -> Any:
        """One alert; a resolved fault gets endsAt."""
        alert = {
            "labels": {
                "alertname": f"C4{fault['detector']}",
                "severity": "critical"
                if fault["fault_class"] in ("hardware", "non_comm_hang", "comm_hang")
                else "warning",
                "component": fault["component"],
                "node": fault["node"],
                "fault_class": fault["fault_class"],
                "fault_id": fault["fault_id"],
            },
            "annotations": {
                "summary": fault["summary"],
                "action": fault["action"],
                "evidence": fault.get("evidence_json", ""),
            },
            "startsAt": _iso(fault.get("first_seen")),
            "generatorURL": "c4://faults/" + fault["fault_id"],
        }
        if fault["state"] == "resolved":
            alert["endsAt"] = _iso(fault.get("ts"))
        return [alert]


@dataclass
class WebhookSink:
    """A generic JSON webhook: the fault row as an object."""

    target: str
    name: str = "webhook"

    def payload(self, fault: dict[str, Any]) -> Any:
        """The fault row (timestamps as ISO strings)."""
        return {k: (_iso(v) if isinstance(v, datetime) else v) for k, v in fault.items()}


@dataclass
class SlackSink:
    """A Slack-compatible incoming webhook: {"text": ...}."""

    target: str
    name: str = "slack"

    def payload(self, fault: dict[str, Any]) -> Any:
        """One line a human reads."""
        icon = ":white_check_mark:" if fault["state"] == "resolved" else ":rotating_light:"
        return {"text": f"{icon} [{fault['state']}] {fault['summary']} (action: {fault['action']})"}


@dataclass
class Notifier:
    """Sends each fault state once per sink, with retries and a rate limit; records every action."""

    sinks: list[Any]
    retries: int = 3
    backoff_s: float = 0.5
    max_per_minute: int = 30
    timeout_s: float = 5.0
    _sent: set[tuple[str, str, str, str]] = field(default_factory=set)  # (sink, target, fault_id, state)
    _recent: list[float] = field(default_factory=list)

    def load(self, sent_rows: Iterable[tuple[str, str, str, str]]) -> None:
        """What the sinks already accepted, from the actions table (``SENT_SQL``: sink, target, fault_id,
        newest state sent), so a restarted or newly leading collector does not announce it again; each
        target apart (two webhooks are two receivers)."""
        for sink, target, fault_id, state in sent_rows:
            self._sent.add((sink, target, fault_id, state))

    def notify(self, faults: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Announce new open and resolved faults; returns action rows."""
        actions = []
        for fault in faults:
            if fault["state"] not in ("open", "resolved"):
                continue
            for sink in self.sinks:
                key = (sink.name, sink.target, fault["fault_id"], fault["state"])
                if key in self._sent:  # de-duplicated: already announced
                    continue
                now = time.monotonic()
                self._recent = [t for t in self._recent if now - t < 60]
                if len(self._recent) >= self.max_per_minute:
                    actions.append(self._row(fault, sink, "rate_limited", 0, "over the per-minute limit"))
                    continue
                self._recent.append(now)
                outcome, attempts, detail = self._post(sink.target, sink.payload(fault))
                if outcome == "sent":
                    self._sent.add(key)
                    other = "open" if fault["state"] == "resolved" else "resolved"
                    self._sent.discard((*key[:3], other))  # a re-opened fault is news again
                actions.append(self._row(fault, sink, outcome, attempts, detail))
        return actions

    def _post(self, url: str, body: Any) -> tuple[str, int, str]:
        data = json.dumps(body, default=str).encode()
        detail = ""
        for attempt in range(1, self.retries + 1):
            req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return "sent", attempt, f"HTTP {resp.status}"
            except (urllib.error.URLError, OSError) as exc:
                detail = str(exc)
                log.warning("alert delivery failed url=%s attempt=%d error=%s", url, attempt, exc)
                time.sleep(self.backoff_s * attempt)
        return "failed", self.retries, detail

    @staticmethod
    def _row(fault: dict[str, Any], sink: Any, outcome: str, attempts: int, detail: str) -> dict[str, Any]:
        return {
            "ts": datetime.now(UTC).replace(tzinfo=None),
            "node": fault["node"],
            "job": "",
            "fault_id": fault["fault_id"],
            "sink": sink.name,
            "target": sink.target,
            "fault_state": fault["state"],
            "outcome": outcome,
            "attempts": attempts,
            "detail": detail[:500],
        }
