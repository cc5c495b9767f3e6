"""An agent's token (or certificate) writes only agent tables, only for its own node; derived tables
are the collector's, plans the planner's. Forged rows are refused per batch, named and counted, in
one process and behind ingest processes."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from datetime import UTC, datetime

import grpc
import pyarrow as pa
import pytest
from testkit.certs import CA
from testkit.procs import C4, AgentProc, CollectorProc
from testkit.wait import wait_for
from testkit.wire import batch, code_of, heartbeat, hello, stub, token_security

from c4.catalogue import load
from c4.collector.auth import CERT_NAME_KEY
from c4.push import PushError, push_table
from c4.query import QueryError, query_arrow
from c4.security import ClientSecurity
from c4.sim.procs import free_port
from c4.telemetry.v1 import telemetry_pb2 as pb

AGENT_TOKEN = "agent-node-a-7f3c9d2e41b8"
FLEET_TOKEN = "fleet-any-agent-5e1a0c77d9"
READER_TOKEN = "reader-grafana-2b6f8e0a13"
PLANNER_TOKEN = "planner-c4-plan-4d0b9e21aa"
FAST_AGENT = {
    "C4_AGENT_INTERVAL_S": "0.05",
    "C4_AGENT_FLUSH_INTERVAL_S": "0.05",
    "C4_AGENT_BACKOFF_INITIAL_S": "0.05",
    "C4_AGENT_BACKOFF_MAX_S": "0.3",
}
PROCESSES = pytest.mark.parametrize("ingest_processes", [0, 2], ids=["one-process", "two-ingest-processes"])


def config(tmp_path, ingest_processes: int, **keys) -> str:
    """A collector config file: no background rows, ``ingest_processes``, and ``keys``."""
    keys = {
        "diagnose_interval_s": 0,
        "metrics_interval_s": 3600,
        "ingest_processes": ingest_processes,
        **keys,
    }
    lines = ["[collector]"]
    for k, v in keys.items():
        lines.append(f"{k} = {json.dumps(v) if not isinstance(v, dict) else _table(v)}")
    path = tmp_path / "c4.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _table(d: dict) -> str:
    return "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in d.items()) + " }"


def forged_fault(node: str) -> dict:
    """A faults row claiming an Xid 79 on ``node``."""
    spec = load()["faults"]
    return {c: None for c in spec.column_names} | {
        "ts": datetime.now(UTC).replace(tzinfo=None),
        "node": node,
        "job": "",
        "fault_id": f"xid:{node}/gpu0",
        "detector": "xid",
        "fault_class": "hardware",
        "component_type": "gpu",
        "component": f"{node}/gpu0",
        "state": "open",
        "action": "drain_node",
    }


def metrics_text(port: int) -> str | None:
    """The /metrics page, or None while nothing listens there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            return r.read().decode()
    except urllib.error.URLError:
        return None


def full(table: str, row: dict) -> pa.Table:
    """One row of ``table`` dated now, with every other column NULL (the collector refuses a NULL ts)."""
    spec = load()[table]
    now = datetime.now(UTC).replace(tzinfo=None)
    return pa.Table.from_pylist(
        [{c: None for c in spec.column_names} | {"ts": now} | row], schema=spec.arrow_schema
    )


def acks(agent_stub, batches: list[pb.Batch]) -> list[tuple[int, str]]:
    """(code, message) of each batch pushed in one stream."""
    return [(a.code, a.message) for a in agent_stub.Push(iter(batches), timeout=30)]


DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


@PROCESSES
def test_tokens_write_only_their_tables_and_their_own_nodes_rows(tmp_path, ingest_processes):
    tokens = tmp_path / "tokens"
    tokens.write_text(
        f"{AGENT_TOKEN} agent node-a\n{FLEET_TOKEN} agent *\n{READER_TOKEN} reader grafana\n"
        f"{PLANNER_TOKEN} planner c4-plan\n"
    )
    metrics_port = free_port()
    cfg = config(tmp_path, ingest_processes, metrics_listen=f"127.0.0.1:{metrics_port}")
    col = CollectorProc(tmp_path, extra=["--tokens-file", str(tokens), "--config", cfg]).start()
    reader = token_security(tmp_path, READER_TOKEN)

    def rows(sql: str):
        return query_arrow(col.address, sql, security=reader)[0].to_pylist()

    try:
        agent = stub(col.address, token_security(tmp_path, AGENT_TOKEN))
        # a named agent token registers only its own node, under its own agent id
        assert (
            code_of(lambda: agent.Hello(hello("node-a", "node-b"), timeout=30))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        agent.Hello(hello("node-a"), timeout=30)
        # ... writes agent tables for node-a, and nothing else
        faults = batch("node-a", 2, "faults", [forged_fault("node-b")])
        own_fault = batch("node-a", 3, "faults", [forged_fault("node-a")])
        other_node = heartbeat("node-a", 4, node="node-b")
        nodes_row = batch("node-a", 5, "nodes", [{"agent_id": "node-a", "gpu_count": 99}])
        plan = batch("node-a", 6, "plans", [{"plan_id": "forged"}])
        out = acks(
            agent,
            [heartbeat("node-a", 1), faults, own_fault, other_node, nodes_row, plan, heartbeat("node-a", 7)],
        )
        assert [c for c, _ in out] == [0, DENIED, DENIED, DENIED, DENIED, DENIED, 0]
        assert "may not write table 'faults'" in out[1][1] and "rows of node 'node-a' only" in out[3][1]

        # a fleet token: any agent id and node, but only the node its Hello registered
        fleet = stub(col.address, token_security(tmp_path, FLEET_TOKEN))
        unregistered = acks(fleet, [heartbeat("node-x", 1)])
        assert [c for c, _ in unregistered] == [UNAVAILABLE]  # retried after the agent's Hello
        fleet.Hello(hello("node-x", "node-x"), timeout=30)
        out = acks(
            fleet,
            [
                heartbeat("node-x", 1),
                heartbeat("node-x", 2, node="node-y"),
                batch("node-x", 3, "faults", [forged_fault("node-x")]),
            ],
        )
        assert [c for c, _ in out] == [0, DENIED, DENIED]

        # the planner writes plans; an agent token may not, nor may the planner write agent tables
        planner = token_security(tmp_path, PLANNER_TOKEN)
        plans = full("plans", {"plan_id": "p1", "node": "", "job": ""})
        assert push_table(col.address, "plans", plans, agent_id="c4-plan", security=planner) == 1
        with pytest.raises(PushError, match="may not write table 'agent_heartbeat'"):
            beats = full("agent_heartbeat", {"node": "node-a", "agent_id": "c4-plan", "tick": 1})
            push_table(col.address, "agent_heartbeat", beats, agent_id="c4-plan", security=planner)

        assert rows("SELECT count(*) AS n FROM faults") == [{"n": 0}]
        # (behind ingest processes /metrics starts once they all serve, after the first answers)
        scraped = wait_for(lambda: metrics_text(metrics_port), what="/metrics serving")
        assert "c4_faults_open{" not in scraped and "gpu0" not in scraped
        assert rows("SELECT node, count(*) AS n FROM agent_heartbeat GROUP BY 1 ORDER BY 1") == [
            {"node": "node-a", "n": 2},
            {"node": "node-x", "n": 1},
        ]
        assert rows("SELECT max(gpu_count) AS g FROM nodes") == [{"g": 0}]
        assert rows("SELECT plan_id FROM plans") == [{"plan_id": "p1"}]

        def refused_counted():
            counters = dict(stub(col.address, reader).Stats(pb.StatsRequest(), timeout=30).counters)
            return counters if counters.get("refused_table_not_allowed") == 6 else None

        counters = wait_for(refused_counted, what="refusals counted in the store process")
        assert counters["refused_other_node"] == 2
        assert counters["refused_no_hello"] == 1
        assert counters["auth_refused:push:permission_denied"] == 8
        assert counters["auth_refused:hello:permission_denied"] == 1
    finally:
        assert col.stop() == 0


@pytest.fixture
def pki(tmp_path):
    """A CA with a loopback server certificate and client certificates named node-a and dashboard."""
    ca = CA(tmp_path / "pki")
    return {
        "ca": str(ca.pem),
        "server": ca.issue("collector.c4.test", server=True),
        "node-a": ca.issue("node-a", server=False),
        "dashboard": ca.issue("dashboard", server=False),
        "star": ca.issue("*", server=False),
    }


def _client(pki, name: str) -> ClientSecurity:
    pair = pki[name]
    return ClientSecurity(tls_ca=pki["ca"], tls_cert=str(pair.cert), tls_key=str(pair.key))


def test_mutual_tls_without_tokens_needs_roles_for_certificates(tmp_path, pki):
    srv = pki["server"]
    tls = ["--tls-cert", str(srv.cert), "--tls-key", str(srv.key), "--tls-client-ca", pki["ca"]]
    out = subprocess.run(
        C4 + ["collector", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "x.duckdb"), *tls],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "mtls_roles" in out.stderr, out.stderr


@PROCESSES
def test_a_certificate_is_its_name_with_the_roles_configured(tmp_path, pki, ingest_processes):
    srv = pki["server"]
    cfg = config(tmp_path, ingest_processes, mtls_roles={"*": "agent", "dashboard": "reader"})
    tls = ["--tls-cert", str(srv.cert), "--tls-key", str(srv.key), "--tls-client-ca", pki["ca"]]
    dashboard = _client(pki, "dashboard")
    col = CollectorProc(tmp_path, extra=[*tls, "--config", cfg], security=dashboard).start()
    agent = AgentProc(
        tmp_path,
        col.address,
        "node-a",
        [
            "--samplers",
            "heartbeat",
            "--tls-ca",
            pki["ca"],
            "--tls-cert",
            str(pki["node-a"].cert),
            "--tls-key",
            str(pki["node-a"].key),
        ],
        env=FAST_AGENT,
    ).start()
    try:
        sql = "SELECT count(*) FROM agent_heartbeat WHERE node = 'node-a'"
        wait_for(
            lambda: query_arrow(col.address, sql, security=dashboard)[0].column(0)[0].as_py() >= 3,
            what="rows",
        )
        node_a = stub(col.address, _client(pki, "node-a"))
        # the certificate node-a is agent node-a of node node-a: nothing else
        assert code_of(lambda: node_a.Hello(hello("node-b"), timeout=30)) == grpc.StatusCode.PERMISSION_DENIED
        assert (
            code_of(lambda: node_a.Hello(hello("node-a", "node-b"), timeout=30))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        out = acks(
            node_a,
            [
                batch("node-a", 10**15, "faults", [forged_fault("node-b")]),
                heartbeat("node-a", 10**15 + 1, node="node-b"),
            ],
        )
        assert [c for c, _ in out] == [DENIED, DENIED]
        # it may not read; the dashboard may read but not push; a certificate named '*' is nobody
        with pytest.raises(QueryError) as err:
            query_arrow(col.address, "SELECT 1", security=_client(pki, "node-a"))
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        # nor by claiming the name an ingest process relays to the store process
        spoofed = [(CERT_NAME_KEY, "dashboard")]
        query = pb.QueryRequest(sql="SELECT 1")
        assert code_of(lambda: list(node_a.Query(query, metadata=spoofed, timeout=30))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        dash = stub(col.address, dashboard)
        assert code_of(lambda: acks(dash, [heartbeat("dashboard", 1)])) == grpc.StatusCode.PERMISSION_DENIED
        star = stub(col.address, _client(pki, "star"))
        assert code_of(lambda: star.Hello(hello("node-z"), timeout=30)) == grpc.StatusCode.UNAUTHENTICATED
        faults = query_arrow(col.address, "SELECT count(*) FROM faults", security=dashboard)[0]
        assert faults.column(0)[0].as_py() == 0
        other = "SELECT count(*) FROM agent_heartbeat WHERE node <> 'node-a'"
        assert query_arrow(col.address, other, security=dashboard)[0].column(0)[0].as_py() == 0
    finally:
        agent.stop()
        assert col.stop() == 0
