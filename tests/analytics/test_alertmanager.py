"""Alerts arrive at a real Prometheus Alertmanager (Debian's package, installed by `make test`) on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from datetime import UTC, datetime

from testkit.procs import free_port

from c4.analytics.actions import AlertmanagerSink, Notifier
from c4.analytics.findings import Finding

CONFIG = """route:
  receiver: none
  group_wait: 1s
receivers:
  - name: none
"""


def test_alerts_reach_a_real_alertmanager(tmp_path):
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, (
        "prometheus-alertmanager missing: `make test` installs it (apt-get install prometheus-alertmanager)"
    )
    (tmp_path / "am.yml").write_text(CONFIG)
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "/-/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        f = Finding(
            "xid79",
            "hardware",
            "gpu",
            "host2/gpu5",
            "host2",
            datetime(2026, 1, 1),
            datetime(2026, 1, 1),
            1.0,
            "drain_node",
            "GPU has fallen off the bus on host2/gpu5",
            {"xid": 79},
        )
        rows = Notifier([AlertmanagerSink(base)], backoff_s=0.1).notify(
            [f.row(datetime.now(UTC).replace(tzinfo=None))]
        )
        assert rows[0]["outcome"] == "sent", rows
        alerts = json.loads(urllib.request.urlopen(base + "/api/v2/alerts", timeout=5).read())
        ours = [a for a in alerts if a["labels"].get("alertname") == "C4xid79"]
        assert ours and ours[0]["labels"]["component"] == "host2/gpu5"
        assert ours[0]["annotations"]["action"] == "drain_node" and ours[0]["status"]["state"] in (
            "active",
            "unprocessed",
        )
    finally:
        proc.terminate()
        proc.wait(10)
