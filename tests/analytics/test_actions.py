"""Alert sinks post the right payloads to a real local HTTP receiver; isolation is dry-run by default."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from c4.analytics.actions import AlertmanagerSink, Notifier, SlackSink, WebhookSink
from c4.analytics.findings import Finding
from c4.analytics.remediation import ACTIONS_THAT_DRAIN, RemediationStep


def isolation_step(command: str, dry_run: bool = True) -> RemediationStep:
    """The collector's isolation step for ``command``."""
    return RemediationStep("isolation", command, ACTIONS_THAT_DRAIN, dry_run)


class Receiver(BaseHTTPRequestHandler):
    got: list = []
    fail_first: int = 0

    def do_POST(self):  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if Receiver.fail_first > 0:
            Receiver.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        Receiver.got.append((self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.got, Receiver.fail_first = [], 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def fault_row(state="open", action="replace_cable"):
    f = Finding(
        "nic_rate",
        "hardware",
        "nic_port",
        "host1/mlx5_2p1",
        "host1",
        datetime(2026, 1, 1),
        datetime(2026, 1, 1, 0, 1),
        0.9,
        action,
        "host1/mlx5_2p1 runs at 200 Gb/s",
        {"rate_bps": 2e11},
    )
    return f.row(datetime(2026, 1, 1, 0, 2), state)


def test_payloads_dedup_and_resolution(receiver):
    n = Notifier(
        [AlertmanagerSink(receiver), WebhookSink(receiver + "/hook"), SlackSink(receiver + "/slack")],
        backoff_s=0.01,
    )
    rows = n.notify([fault_row()])
    assert [r["outcome"] for r in rows] == ["sent", "sent", "sent"]
    paths = {p: b for p, b in Receiver.got}
    am = paths["/api/v2/alerts"][0]
    assert am["labels"]["alertname"] == "C4nic_rate" and am["labels"]["component"] == "host1/mlx5_2p1"
    assert am["startsAt"].startswith("2026-01-01T00:00:00") and "endsAt" not in am
    assert (
        paths["/hook"]["fault_id"] == "nic_rate:host1/mlx5_2p1"
        and "rotating_light" in paths["/slack"]["text"]
    )
    assert n.notify([fault_row()]) == []  # the same state is not announced twice
    n.notify([fault_row("resolved")])
    resolved = [b for p, b in Receiver.got if p == "/api/v2/alerts"][-1][0]
    assert "endsAt" in resolved


def test_retries_then_failure_is_recorded(receiver):
    Receiver.fail_first = 2
    rows = Notifier([WebhookSink(receiver + "/hook")], backoff_s=0.01).notify([fault_row()])
    assert rows[0]["outcome"] == "sent" and rows[0]["attempts"] == 3
    dead = Notifier([WebhookSink("http://127.0.0.1:9/none")], retries=2, backoff_s=0.01).notify([fault_row()])
    assert dead[0]["outcome"] == "failed" and dead[0]["attempts"] == 2


def test_rate_limit():
    n = Notifier([WebhookSink("http://127.0.0.1:9/x")], retries=1, backoff_s=0, max_per_minute=2)
    rows = n.notify([{**fault_row(), "fault_id": f"f{i}"} for i in range(4)])
    assert [r["outcome"] for r in rows] == ["failed", "failed", "rate_limited", "rate_limited"]


def test_isolation_hook_dry_run_and_real(tmp_path):
    hook = isolation_step("scontrol update NodeName={node} State=DRAIN Reason={reason}")
    rows = hook.apply([fault_row(action="drain_node"), fault_row(action="replace_cable")])
    assert len(rows) == 1 and rows[0]["outcome"] == "dry_run"
    assert "NodeName=host1" in rows[0]["detail"] and "Reason=C4:nic_rate:host1/mlx5_2p1" in rows[0]["detail"]
    assert hook.apply([fault_row(action="drain_node")]) == []  # once per fault
    marker = tmp_path / "drained"
    real = isolation_step(f"touch {marker}.{{node}}", dry_run=False)
    out = real.apply([fault_row(action="drain_node")])
    assert out[0]["outcome"] == "ran" and (tmp_path / "drained.host1").exists()


def test_loaded_sent_states_are_not_announced_again(receiver):
    """A collector that takes over (or restarts) loads what the sinks accepted: no second alert."""
    before = len(Receiver.got)
    n = Notifier([WebhookSink(receiver + "/hook")], backoff_s=0.01)
    n.load([("webhook", receiver + "/hook", "nic_rate:host1/mlx5_2p1", "open")])
    assert n.notify([fault_row()]) == [] and len(Receiver.got) == before
    rows = n.notify([fault_row("resolved")])  # a new state is news
    assert [r["outcome"] for r in rows] == ["sent"] and len(Receiver.got) == before + 1


def test_two_webhooks_each_get_every_fault_once(receiver):
    """Two webhook URLs are two receivers (a team channel and a pager): one's delivery does not stand for
    the other's, live or loaded from the actions table after a restart."""
    n = Notifier([WebhookSink(receiver + "/team"), WebhookSink(receiver + "/pager")], backoff_s=0.01)
    rows = n.notify([fault_row()])
    assert sorted((r["target"], r["outcome"]) for r in rows) == [
        (receiver + "/pager", "sent"),
        (receiver + "/team", "sent"),
    ]
    assert sorted(path for path, _ in Receiver.got) == ["/pager", "/team"]
    assert n.notify([fault_row()]) == []  # once each
    # a restarted collector whose pager delivery had failed: only the pager gets it now
    again = Notifier([WebhookSink(receiver + "/team"), WebhookSink(receiver + "/pager")], backoff_s=0.01)
    again.load([("webhook", receiver + "/team", "nic_rate:host1/mlx5_2p1", "open")])
    assert [r["target"] for r in again.notify([fault_row()])] == [receiver + "/pager"]
    assert sorted(path for path, _ in Receiver.got) == ["/pager", "/pager", "/team"]
