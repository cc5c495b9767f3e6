"""The collector's Prometheus /metrics, scraped from a real collector process fed by a real agent."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families
from testkit.procs import AgentProc, CollectorProc
from testkit.wait import wait_for as wait_for_condition

from c4.bench.agent import build_node
from c4.collector.exporter import LATEST
from c4.push import push_table
from c4.query import query_arrow
from c4.sim.procs import free_port

FAST_AGENT = {"C4_AGENT_INTERVAL_S": "0.2", "C4_AGENT_FLUSH_INTERVAL_S": "0.2"}
#: Unit suffixes a C4 metric may end in (Prometheus base units), besides _total and _info.
BASE_UNITS = ("_bytes", "_seconds", "_ratio", "_celsius", "_watts", "_hertz", "_joules", "_bytes_per_second")


#: These waits cover a collector and agents starting under TLS: a longer timeout, a slower poll.
wait_for = functools.partial(wait_for_condition, timeout_s=60.0, poll_s=0.2)


def scrape(url: str) -> dict:
    """name -> family, parsed with the official client parser."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fam, **labels) -> list:
    return [s for s in fam.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def fault(fault_id: str, state: str, ts: datetime, component: str) -> dict:
    return {
        "ts": ts,
        "node": component.split("/")[0],
        "job": "",
        "fault_id": fault_id,
        "detector": "nic_rate",
        "fault_class": "hardware",
        "component_type": "nic_port",
        "component": component,
        "first_seen": ts,
        "last_seen": ts,
        "confidence": 0.9,
        "action": "replace_cable",
        "state": state,
        "summary": "slow port",
        "evidence_json": "{}",
        "evidence_sql": "",
    }


def action(fault_id: str, outcome: str, ts: datetime) -> dict:
    return {
        "ts": ts,
        "node": "gpu-node-3",
        "job": "",
        "fault_id": fault_id,
        "sink": "isolation",
        "target": "scontrol update NodeName=gpu-node-3 State=DRAIN",
        "fault_state": "open",
        "outcome": outcome,
        "attempts": 1,
        "detail": "",
    }


@pytest.fixture
def fed_collector(tmp_path, sysfs_fixture):
    """A collector with /metrics on, diagnosis off, and one agent with 8 fake GPUs and the fixture NICs."""
    node = tmp_path / "node"
    node.mkdir()
    samplers = build_node(node)
    samplers = {
        "gpu": samplers["gpu"],
        "nic": {"sysfs_root": str(sysfs_fixture)},
        "host": {},
        "heartbeat": {},
    }
    agent_cfg = tmp_path / "agent.toml"
    lines = ["[agent]"]
    for name, opts in samplers.items():
        lines.append(f"[agent.samplers.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in opts.items()]
    agent_cfg.write_text("\n".join(lines) + "\n")
    col_cfg = tmp_path / "collector.toml"
    col_cfg.write_text("[collector]\ndiagnose_interval_s = 0\n")
    metrics_port = free_port()
    col = CollectorProc(
        tmp_path, extra=["--config", str(col_cfg), "--metrics-listen", f"127.0.0.1:{metrics_port}"]
    ).start()
    agent = AgentProc(
        tmp_path, col.address, "gpu-node-3", ["--config", str(agent_cfg)], env=FAST_AGENT
    ).start()
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        fault("nic_rate:gpu-node-3/mlx5_0p1", "open", now - timedelta(seconds=20), "gpu-node-3/mlx5_0p1"),
        fault(
            "nic_rate:gpu-node-3/mlx5_0p1", "acknowledged", now - timedelta(seconds=10), "gpu-node-3/mlx5_0p1"
        ),
        fault("nic_rate:gpu-node-3/mlx4_0p2", "open", now - timedelta(seconds=20), "gpu-node-3/mlx4_0p2"),
        fault("nic_rate:gpu-node-3/mlx4_0p2", "resolved", now - timedelta(seconds=10), "gpu-node-3/mlx4_0p2"),
    ]
    xid = {
        **fault("xid:gpu-node-3/gpu1", "resolved", now - timedelta(seconds=25), "gpu-node-3/gpu1"),
        "first_seen": now - timedelta(seconds=30),
    }
    push_table(col.address, "faults", pa.Table.from_pylist([*rows, xid]), agent_id="test-faults")
    acts = [
        action("xid:gpu-node-3/gpu1", "ran", now - timedelta(seconds=22)),  # isolated 8 s after onset
        action("nic_rate:gpu-node-3/mlx5_0p1", "dry_run", now - timedelta(seconds=19)),  # not isolated
    ]
    push_table(col.address, "actions", pa.Table.from_pylist(acts), agent_id="test-actions")
    try:
        sql = "SELECT count(DISTINCT gpu_index) FROM gpu_samples"
        wait_for(lambda: query_arrow(col.address, sql)[0].column(0)[0].as_py() == 8, what="8 GPUs")
        wait_for(
            lambda: query_arrow(col.address, "SELECT count(*) FROM ib_port_samples")[0].column(0)[0].as_py(),
            what="NIC rows",
        )
        yield col, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        agent.stop()
        col.stop()


def test_metrics_scrape_parses_and_follows_conventions(fed_collector):
    col, url = fed_collector
    fams = scrape(url)
    c4 = {n: f for n, f in fams.items() if n.startswith("c4_")}
    # every metric the exporter declares is there, with its type
    for spec in LATEST:
        for s in spec.series:
            name = s.name.removesuffix("_total") if s.kind == "counter" else s.name
            assert name in c4, f"{s.name} missing"
            assert c4[name].type == s.kind, (name, c4[name].type)
    for name, fam in c4.items():
        assert fam.documentation, f"{name} has no help"
        for sample in fam.samples:
            assert sample.name.startswith("c4_")
            if fam.type == "counter":
                assert sample.name.endswith("_total"), sample.name
                assert sample.value >= 0
        assert not name.endswith(("_mhz", "_pct", "_w", "_c", "_bps", "_mbps")), f"{name}: not a base unit"
    # GPU, NIC, netdev and node health of the agent's node
    assert len(samples(c4["c4_gpu_utilization_ratio"], node="gpu-node-3")) == 8
    util = [s.value for s in c4["c4_gpu_utilization_ratio"].samples]
    assert all(0 <= v <= 1 for v in util) and max(util) > 0
    assert all(20 <= s.value <= 120 for s in c4["c4_gpu_temperature_celsius"].samples)
    assert all(s.value >= 1e8 for s in c4["c4_gpu_sm_clock_hertz"].samples)  # MHz became Hz
    ports = {(s.labels["device"], s.labels["port"]) for s in samples(c4["c4_nic_port_up"], node="gpu-node-3")}
    assert ("mlx5_0", "1") in ports and len(ports) == 4
    assert samples(c4["c4_nic_port_rate_bytes_per_second"], device="mlx5_0")[0].value == 25e9 / 8
    assert samples(c4["c4_node_gpus"], node="gpu-node-3")[0].value == 8
    assert samples(c4["c4_node_info"], node="gpu-node-3", agent_id="gpu-node-3")
    assert samples(c4["c4_node_memory_total_bytes"], node="gpu-node-3")[0].value > 1 << 20
    assert samples(c4["c4_netdev_up"], node="gpu-node-3")
    # open faults: the acknowledged one counts, the resolved one does not
    open_faults = c4["c4_faults_open"].samples
    assert [(s.labels["component"], s.labels["state"], s.value) for s in open_faults] == [
        ("gpu-node-3/mlx5_0p1", "acknowledged", 1.0)
    ]
    assert open_faults[0].labels["fault_class"] == "hardware"
    # liveness and ingest counters
    age = samples(c4["c4_agent_last_batch_age_seconds"], agent_id="gpu-node-3")[0].value
    assert 0 <= age < 300
    assert samples(c4["c4_collector_rows_committed"])[0].value > 0
    assert c4["c4_collector_batches_refused"].type == "counter"
    assert c4["c4_collector_auth_refusals"].type == "counter"
    assert "process_cpu_seconds" in fams  # the collector process itself
    assert c4["c4_exporter_query_errors"].samples[0].value == 0


def test_recovery_histograms_come_from_the_stored_timelines(fed_collector):
    col, url = fed_collector
    c4 = scrape(url)
    detect = c4["c4_fault_time_to_detect_seconds"]
    assert detect.type == "histogram"
    # three faults, all hardware: detected 0 s, 0 s and 5 s after onset
    assert samples(detect, fault_class="hardware", le="+Inf")[0].value == 3
    assert samples(detect, fault_class="hardware", le="0.5")[0].value == 2
    assert samples(detect, fault_class="hardware", le="5.0")[0].value == 3
    assert [s.value for s in detect.samples if s.name.endswith("_sum")] == [pytest.approx(5.0, abs=0.01)]
    isolate = c4["c4_fault_time_to_isolate_seconds"]
    assert samples(isolate, fault_class="hardware", le="+Inf")[0].value == 1  # the dry run does not count
    assert samples(isolate, fault_class="hardware", le="5.0")[0].value == 0
    assert samples(isolate, fault_class="hardware", le="10.0")[0].value == 1
    assert c4["c4_fault_time_to_recover_seconds"].samples == []  # no recovery observed
    t, _ = query_arrow(col.address, "SELECT stage FROM fault_timeline WHERE fault_id = 'xid:gpu-node-3/gpu1'")
    assert sorted(t.column(0).to_pylist()) == ["detected", "isolated", "onset"]


def test_refusals_show_up_in_metrics(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("reader-token-0123456789 reader grafana\n")
    port = free_port()
    col = CollectorProc(
        tmp_path, extra=["--tokens-file", str(tokens), "--metrics-listen", f"127.0.0.1:{port}"]
    ).start()
    try:
        from c4.query import QueryError
        from c4.security import ClientSecurity

        with pytest.raises(QueryError):
            query_arrow(col.address, "SELECT 1", security=ClientSecurity())
        fam = scrape(f"http://127.0.0.1:{port}/metrics")["c4_collector_auth_refusals"]
    finally:
        col.stop()
    assert samples(fam, rpc="query", code="unauthenticated")[0].value == 1


def test_a_real_prometheus_scrapes_the_collector(fed_collector, tmp_path):
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: `make test` installs it (apt-get install prometheus)"
    col, url = fed_collector
    target = url.removeprefix("http://").removesuffix("/metrics")
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: c4\n    static_configs:\n      - targets: ['{target}']\n"
    )
    prom = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )

    def query(expr: str) -> list:
        q = urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?{q}", timeout=5) as r:
                return json.loads(r.read())["data"]["result"]
        except OSError:
            return []

    try:
        up = wait_for(lambda: [r for r in query('up{job="c4"}') if r["value"][1] == "1"], what="target up")
        assert up[0]["metric"]["instance"] == target
        gpus = wait_for(
            lambda: query('count(c4_gpu_temperature_celsius{node="gpu-node-3"})'), what="GPU series"
        )
        assert gpus[0]["value"][1] == "8"
        assert (
            query('c4_faults_open{state="acknowledged"}')[0]["metric"]["component"] == "gpu-node-3/mlx5_0p1"
        )
        assert query("rate(c4_collector_rows_committed_total[1m])") is not None
    finally:
        prom.terminate()
        prom.wait(30)
