"""TLS, mutual TLS and bearer tokens on a real collector process, with certificates made at test time."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

import grpc
import pytest
from testkit.certs import CA
from testkit.procs import C4, AgentProc, CollectorProc
from testkit.wait import wait_for

from c4.agent.batcher import rows_to_table
from c4.arrow_ipc import encode_ipc
from c4.catalogue import load
from c4.collector.auth import TokenTable, check_server_security
from c4.config import CollectorConfig
from c4.query import QueryError, query_arrow
from c4.security import ClientSecurity, SecurityError
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

AGENT_TOKEN = "agent-node-a-7f3c9d2e41b8"
FLEET_TOKEN = "fleet-any-agent-5e1a0c77d9"
READER_TOKEN = "reader-grafana-2b6f8e0a13"
OPERATOR_TOKEN = "operator-ops-9a4d61c0e7f2"
FAST_AGENT = {
    "C4_AGENT_INTERVAL_S": "0.05",
    "C4_AGENT_FLUSH_INTERVAL_S": "0.05",
    "C4_AGENT_BACKOFF_INITIAL_S": "0.05",
    "C4_AGENT_BACKOFF_MAX_S": "0.3",
}


@pytest.fixture
def pki(tmp_path):
    """A CA with a loopback server certificate and a client certificate, and a rogue CA's client."""
    ca = CA(tmp_path / "pki")
    rogue = CA(tmp_path / "rogue", "rogue-ca")
    return {
        "ca": ca.pem,
        "server": ca.issue("collector.c4.test", server=True),
        "client": ca.issue("node-a", server=False),
        "rogue_client": rogue.issue("node-a", server=False),
        "rogue_ca": rogue.pem,
    }


@pytest.fixture
def tokens(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(
        "# token  roles  name\n"
        f"{AGENT_TOKEN}  agent  node-a\n"
        f"{FLEET_TOKEN}  agent  *   # one token for a whole DaemonSet\n"
        f"{READER_TOKEN}  reader  grafana\n"
        f"{OPERATOR_TOKEN}  reader,operator  ops\n"
    )
    return path


def token_file(tmp_path, token: str, name: str):
    path = tmp_path / f"{name}.token"
    path.write_text(token + "\n")
    return str(path)


def select_one(address: str, security: ClientSecurity) -> int:
    table, _ = query_arrow(address, "SELECT 42 AS x", security=security)
    return table.column(0)[0].as_py()


def test_tls_serves_and_a_client_without_the_ca_fails(tmp_path, pki):
    srv = pki["server"]
    good = ClientSecurity(tls_ca=str(pki["ca"]))
    col = CollectorProc(
        tmp_path, extra=["--tls-cert", str(srv.cert), "--tls-key", str(srv.key)], security=good
    ).start()
    try:
        assert select_one(col.address, good) == 42
        # the certificate names collector.c4.test too: a client may check that name instead of the host
        assert (
            select_one(
                col.address, ClientSecurity(tls_ca=str(pki["ca"]), tls_server_name="collector.c4.test")
            )
            == 42
        )
        for bad in (
            ClientSecurity(),  # plaintext (loopback default) to a TLS server
            ClientSecurity(tls_server_name="localhost"),  # TLS, system roots: our CA is unknown
            ClientSecurity(tls_ca=str(pki["rogue_ca"])),  # TLS, the wrong CA
        ):
            with pytest.raises(QueryError) as err:
                query_arrow(col.address, "SELECT 1", timeout_s=5, security=bad)
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
            # the plaintext client is told the likely cause; the TLS ones are not told to use TLS
            assert ("if it serves TLS, give its CA with --tls-ca" in str(err.value)) == (
                bad == ClientSecurity()
            )
    finally:
        assert col.stop() == 0
    assert "tls=True" in col.log()


def test_mutual_tls_rejects_unknown_clients(tmp_path, pki):
    srv, client, rogue = pki["server"], pki["client"], pki["rogue_client"]
    ca = str(pki["ca"])
    good = ClientSecurity(tls_ca=ca, tls_cert=str(client.cert), tls_key=str(client.key))
    config = tmp_path / "c4.toml"  # without tokens, the certificate's name gets its roles here
    config.write_text('[collector]\nmtls_roles = { "node-a" = "reader" }\n')
    col = CollectorProc(
        tmp_path,
        extra=[
            "--tls-cert",
            str(srv.cert),
            "--tls-key",
            str(srv.key),
            "--tls-client-ca",
            ca,
            "--config",
            str(config),
        ],
        security=good,
    ).start()
    try:
        assert select_one(col.address, good) == 42
        for bad in (
            ClientSecurity(tls_ca=ca),  # no client certificate
            ClientSecurity(
                tls_ca=ca, tls_cert=str(rogue.cert), tls_key=str(rogue.key)
            ),  # signed by another CA
        ):
            with pytest.raises(QueryError) as err:
                query_arrow(col.address, "SELECT 1", timeout_s=5, security=bad)
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
            # the plaintext client is told the likely cause; the TLS ones are not told to use TLS
            assert ("if it serves TLS, give its CA with --tls-ca" in str(err.value)) == (
                bad == ClientSecurity()
            )
    finally:
        assert col.stop() == 0
    assert "mtls=True" in col.log()


def test_agent_streams_over_mtls_with_a_token_and_readers_need_theirs(tmp_path, pki, tokens):
    srv, client = pki["server"], pki["client"]
    ca = str(pki["ca"])
    mtls = {"tls_ca": ca, "tls_cert": str(client.cert), "tls_key": str(client.key)}
    reader = ClientSecurity(**mtls, token_file=token_file(tmp_path, READER_TOKEN, "reader"))
    col = CollectorProc(
        tmp_path,
        extra=[
            "--tls-cert",
            str(srv.cert),
            "--tls-key",
            str(srv.key),
            "--tls-client-ca",
            ca,
            "--tokens-file",
            str(tokens),
        ],
        security=reader,
    ).start()
    agent = AgentProc(
        tmp_path,
        col.address,
        "node-a",
        [
            "--samplers",
            "heartbeat",
            "--tls-ca",
            ca,
            "--tls-cert",
            str(client.cert),
            "--tls-key",
            str(client.key),
            "--token-file",
            token_file(tmp_path, AGENT_TOKEN, "agent"),
        ],
        env=FAST_AGENT,
    ).start()
    try:
        sql = "SELECT count(*) FROM agent_heartbeat WHERE node = 'node-a'"
        wait_for(
            lambda: query_arrow(col.address, sql, security=reader)[0].column(0)[0].as_py() >= 5, what="rows"
        )
        # the agent's own token cannot read, and a reader without a token is refused
        with pytest.raises(QueryError) as err:
            query_arrow(
                col.address,
                sql,
                security=ClientSecurity(**mtls, token_file=token_file(tmp_path, AGENT_TOKEN, "a2")),
            )
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(QueryError) as err:
            query_arrow(col.address, sql, security=ClientSecurity(**mtls))
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        agent.stop()
        col.stop()


def _hello(agent_id: str) -> pb.HelloRequest:
    return pb.HelloRequest(agent_id=agent_id, hostname=agent_id)


def _batch(agent_id: str, seq: int) -> pb.Batch:
    """One heartbeat row as a wire batch."""
    catalogue = load()
    row = {"ts": datetime.now(UTC).replace(tzinfo=None), "node": agent_id, "job": "", "agent_id": agent_id}
    row |= {"boot_ns": 1, "tick": seq, "uptime_s": 1.0}
    table = rows_to_table(catalogue, "agent_heartbeat", [row], {})
    spec = catalogue["agent_heartbeat"]
    return pb.Batch(
        agent_id=agent_id, seq=seq, table=spec.name, schema_version=spec.version, arrow_ipc=encode_ipc(table)
    )


def _code(fn) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_tokens_are_enforced_for_push_and_query_and_refusals_counted(tmp_path, tokens):
    col = CollectorProc(tmp_path, extra=["--tokens-file", str(tokens)]).start()

    def stub(token: str | None):
        sec = ClientSecurity(token_file=token_file(tmp_path, token, f"t{abs(hash(token))}") if token else "")
        return pb_grpc.TelemetryStub(sec.channel(col.address))

    def push(token: str | None, agent_id: str, seq: int) -> list[pb.Ack]:
        return list(stub(token).Push(iter([_batch(agent_id, seq)]), timeout=10))

    def query(token: str | None):
        return list(stub(token).Query(pb.QueryRequest(sql="SELECT 1"), timeout=10))

    try:
        # Hello / Push: no token, an unknown token, a reader token, another agent's id
        assert (
            _code(lambda: stub(None).Hello(_hello("node-a"), timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
        )
        assert _code(lambda: stub("not-a-known-token-000").Hello(_hello("node-a"), timeout=10)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert _code(lambda: push(None, "node-a", 1)) == grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: push(READER_TOKEN, "node-a", 1)) == grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: push(AGENT_TOKEN, "node-b", 1)) == grpc.StatusCode.PERMISSION_DENIED
        # a bundle holding one batch of another agent is refused whole, and counted under PushBundle
        bundle = pb.BatchBundle(batches=[_batch("node-a", 1), _batch("node-b", 1)])
        assert _code(lambda: list(stub(AGENT_TOKEN).PushBundle(iter([bundle]), timeout=10))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert (
            _code(lambda: stub(AGENT_TOKEN).Hello(_hello("node-b"), timeout=10))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        # accepted: the agent's own id, and any id with the fleet token
        assert stub(AGENT_TOKEN).Hello(_hello("node-a"), timeout=10).last_committed_seq == 0
        assert [a.code for a in push(AGENT_TOKEN, "node-a", 1)] == [0]
        stub(FLEET_TOKEN).Hello(_hello("node-z"), timeout=10)  # the node its rows must be of
        assert [a.code for a in push(FLEET_TOKEN, "node-z", 1)] == [0]
        # Query needs the reader role
        assert _code(lambda: query(None)) == grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: query(AGENT_TOKEN)) == grpc.StatusCode.PERMISSION_DENIED
        assert len(query(READER_TOKEN)) == 1
        assert (
            _code(lambda: stub(None).Stats(pb.StatsRequest(), timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
        )
        # acknowledging a fault needs the operator role
        update = pb.FaultUpdate(fault_id="nic_rate:x", state="acknowledged", by="t")
        assert (
            _code(lambda: stub(READER_TOKEN).UpdateFault(update, timeout=10))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        assert (
            _code(lambda: stub(OPERATOR_TOKEN).UpdateFault(update, timeout=10)) == grpc.StatusCode.NOT_FOUND
        )
        counters = dict(stub(READER_TOKEN).Stats(pb.StatsRequest(), timeout=10).counters)
    finally:
        col.stop()
    assert counters["auth_refused:hello:unauthenticated"] == 2
    assert counters["auth_refused:hello:permission_denied"] == 1
    assert counters["auth_refused:push:unauthenticated"] == 1
    assert counters["auth_refused:push:permission_denied"] == 2
    assert counters["auth_refused:pushbundle:permission_denied"] == 1
    assert counters["auth_refused:query:unauthenticated"] == 1
    assert counters["auth_refused:query:permission_denied"] == 1
    assert counters["auth_refused:stats:unauthenticated"] == 1
    assert counters["auth_refused:updatefault:permission_denied"] == 1
    assert counters["rows_committed"] >= 2


def test_an_agent_with_a_wrong_token_keeps_its_rows_until_fixed(tmp_path, tokens):
    col = CollectorProc(tmp_path, extra=["--tokens-file", str(tokens)]).start()
    reader = ClientSecurity(token_file=token_file(tmp_path, READER_TOKEN, "reader"))
    sql = "SELECT count(*) FROM agent_heartbeat WHERE node = 'node-a'"
    base = ["--samplers", "heartbeat"]
    agent = AgentProc(
        tmp_path,
        col.address,
        "node-a",
        [*base, "--token-file", token_file(tmp_path, "wrong-token-0123456789", "w")],
        env=FAST_AGENT,
    ).start()
    try:
        wait_for(lambda: "collector refused us" in agent.log(), what="the refusal in the agent log")
        assert query_arrow(col.address, sql, security=reader)[0].column(0)[0].as_py() == 0
        agent.stop()
        spooled = list(agent.spool.glob("*"))
        assert spooled, "the refused agent must keep its batches"
        agent = AgentProc(
            tmp_path,
            col.address,
            "node-a",
            [*base, "--token-file", token_file(tmp_path, AGENT_TOKEN, "a")],
            env=FAST_AGENT,
        ).start()
        wait_for(
            lambda: query_arrow(col.address, sql, security=reader)[0].column(0)[0].as_py() >= 5, what="rows"
        )
    finally:
        agent.stop()
        col.stop()
    assert "UNAUTHENTICATED" in agent.log()


def test_a_collector_off_loopback_needs_tls_and_tokens(tmp_path, tokens):
    # TEST-NET address: the collector must refuse before it binds anything
    out = subprocess.run(
        C4 + ["collector", "--listen", "192.0.2.10:7070", "--db", str(tmp_path / "x.duckdb")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "tls_cert" in out.stderr and "insecure" in out.stderr, out.stderr
    with pytest.raises(SecurityError, match="tokens_file"):
        check_server_security(CollectorConfig(listen="10.0.0.5:7070", tls_cert="c", tls_key="k"))
    assert (
        check_server_security(
            CollectorConfig(listen="10.0.0.5:7070", tls_cert="c", tls_key="k", tokens_file="t")
        )
        == []
    )
    mtls = {"listen": "10.0.0.5:7070", "tls_cert": "c", "tls_key": "k", "tls_client_ca": "ca"}
    with pytest.raises(SecurityError, match="mtls_roles"):  # mutual TLS alone: whose roles?
        check_server_security(CollectorConfig(**mtls))
    assert check_server_security(CollectorConfig(**mtls, mtls_roles={"*": "agent"})) == []
    with pytest.raises(SecurityError, match="mtls_roles"):  # a tokens file decides the roles then
        check_server_security(CollectorConfig(**mtls, tokens_file="t", mtls_roles={"*": "agent"}))
    with pytest.raises(SecurityError, match="roles must be some of"):
        check_server_security(CollectorConfig(**mtls, mtls_roles={"*": "root"}))
    assert CollectorConfig(mtls_roles="*=agent dashboard=reader,operator").mtls_roles == {
        "*": "agent",
        "dashboard": "reader,operator",
    }
    warned = check_server_security(CollectorConfig(listen="10.0.0.5:7070", insecure=True))
    assert any("plaintext" in w for w in warned)
    with pytest.raises(SecurityError, match="tls_key"):
        check_server_security(CollectorConfig(tls_cert="c"))


def test_bad_security_files_are_named(tmp_path):
    bad = tmp_path / "tokens"
    bad.write_text("short agent node-a\n")
    with pytest.raises(SecurityError, match="line 1: token shorter"):
        TokenTable.load(bad)
    bad.write_text(f"{AGENT_TOKEN} writer node-a\n")
    with pytest.raises(SecurityError, match="roles must be some of agent, operator, planner, reader, sim"):
        TokenTable.load(bad)
    bad.write_text(f"{AGENT_TOKEN} agent\n")
    with pytest.raises(SecurityError, match="line 1: expected 'TOKEN ROLES NAME'"):
        TokenTable.load(bad)
    with pytest.raises(SecurityError, match="tokens_file: file .* not found"):
        TokenTable.load(tmp_path / "missing")
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("hello\n")
    with pytest.raises(SecurityError, match="tls_ca: .* not a PEM file"):
        ClientSecurity(tls_ca=str(not_pem)).check()
    out = subprocess.run(
        C4
        + [
            "agent",
            "--collector",
            "127.0.0.1:1",
            "--spool-dir",
            str(tmp_path / "s"),
            "--token-file",
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "token_file" in out.stderr, out.stderr
    out = subprocess.run(
        C4
        + [
            "collector",
            "--db",
            str(tmp_path / "x.duckdb"),
            "--tls-cert",
            str(not_pem),
            "--tls-key",
            str(not_pem),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "tls_key" in out.stderr and "not a PEM file" in out.stderr, out.stderr
