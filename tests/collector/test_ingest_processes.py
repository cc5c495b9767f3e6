"""A collector with ingest processes: real agents, every row exactly once, a killed ingest process replaced."""

from __future__ import annotations

import os
import signal

import grpc
from test_e2e import FAST_AGENT, assert_exactly_once, heartbeat_ticks, scalar
from testkit.procs import AgentProc, CollectorProc
from testkit.wait import wait_for

from c4.sim.procs import child_pids
from c4.telemetry.v1 import telemetry_pb2 as pb
from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_agents_through_ingest_processes_land_exactly_once_across_a_killed_one(tmp_path):
    (tmp_path / "c.toml").write_text("[collector]\ningest_processes = 2\n")
    col = CollectorProc(tmp_path, extra=["--config", str(tmp_path / "c.toml")]).start()
    nodes = [f"node-{i}" for i in range(4)]
    agents = [AgentProc(tmp_path, col.address, n, env=FAST_AGENT).start() for n in nodes]
    try:
        ingest_pids = child_pids(col.p.pid)
        assert len(ingest_pids) == 2, f"expected two ingest processes, found {ingest_pids}"
        # Hello and Query are relayed to the store process; every agent's rows arrive
        for n in nodes:
            wait_for(lambda n=n: len(heartbeat_ticks(col.address, n)) >= 5, what=f"heartbeats of {n}")
        os.kill(ingest_pids[0], signal.SIGKILL)
        wait_for(lambda: "ingest process exited index=0" in col.log(), what="the collector noticing")
        wait_for(
            lambda: (
                len([p for p in child_pids(col.p.pid) if alive(p)]) == 2
                and ingest_pids[0] not in child_pids(col.p.pid)
            ),
            what="a replacement ingest process",
        )
        marks = {n: len(heartbeat_ticks(col.address, n)) for n in nodes}
        for n in nodes:  # agents of the killed process reconnect and go on
            wait_for(
                lambda n=n: len(heartbeat_ticks(col.address, n)) >= marks[n] + 5, what=f"{n} after the kill"
            )
        with grpc.insecure_channel(col.address) as ch:
            counters = dict(pb_grpc.TelemetryStub(ch).Stats(pb.StatsRequest(), timeout=10).counters)
        assert counters["batches_committed"] > 0 and counters["hellos"] >= len(nodes)
    finally:
        for a in agents:
            a.stop()
    for n in nodes:  # what the agents sent before stopping is stored once, with no hole
        assert_exactly_once(heartbeat_ticks(col.address, n))
    assert scalar(col.address, "SELECT count(DISTINCT node) FROM agent_heartbeat") == len(nodes)
    assert col.stop() == 0
    assert not [p for p in child_pids(col.p.pid) if alive(p)]
    assert all(not alive(p) for p in ingest_pids), "ingest processes outlived their collector"


def test_tokens_are_checked_through_ingest_processes(tmp_path):
    from test_bad_input import good

    agent_token, reader_token = "a" * 32, "r" * 32
    (tmp_path / "tokens").write_text(f"{agent_token} agent node-t\n{reader_token} reader ui\n")
    (tmp_path / "c.toml").write_text(
        f"[collector]\ningest_processes = 2\ntokens_file = '{tmp_path / 'tokens'}'\n"
    )
    col = CollectorProc(tmp_path, extra=["--config", str(tmp_path / "c.toml")]).start()

    def bearer(token: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token}")]

    try:
        for _ in range(4):  # new connections: the kernel spreads them over both ingest processes
            with grpc.insecure_channel(col.address) as ch:
                stub = pb_grpc.TelemetryStub(ch)
                # Push is checked in the ingest process, Hello and Query in the store process (relayed)
                acks = list(
                    stub.Push(
                        iter([good("node-t", 1, range(1, 4))]), metadata=bearer(agent_token), timeout=30
                    )
                )
                assert acks[0].code == 0 and acks[0].seq == 1
                try:
                    list(
                        stub.Push(
                            iter([good("node-t", 2, range(4, 5))]), metadata=bearer("x" * 32), timeout=30
                        )
                    )
                    raise AssertionError("a push with an unknown token was accepted")
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                try:
                    stub.Hello(pb.HelloRequest(agent_id="node-t"), metadata=bearer(reader_token), timeout=30)
                    raise AssertionError("a reader token said Hello")
                except grpc.RpcError as exc:
                    assert (
                        exc.code() == grpc.StatusCode.PERMISSION_DENIED
                        and "lacks the agent role" in exc.details()
                    )
                chunks = list(
                    stub.Query(
                        pb.QueryRequest(sql="SELECT count(*) AS n FROM agent_heartbeat"),
                        metadata=bearer(reader_token),
                        timeout=30,
                    )
                )
                assert chunks and not chunks[0].truncated
                # holds on remediation are relayed too: listed by a reader, set only by an operator
                holds = stub.ListHolds(pb.HoldsRequest(), metadata=bearer(reader_token), timeout=30)
                assert list(holds.holds) == []
                try:
                    stub.SetHold(
                        pb.HoldRequest(scope="cluster", hold=True), metadata=bearer(reader_token), timeout=30
                    )
                    raise AssertionError("a reader token held remediation")
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
                    assert "lacks the operator role" in exc.details()
        counters = wait_for(
            lambda: (
                (
                    c := dict(
                        pb_grpc.TelemetryStub(grpc.insecure_channel(col.address))
                        .Stats(pb.StatsRequest(), metadata=bearer(reader_token), timeout=10)
                        .counters
                    )
                ).get("auth_refused:push:unauthenticated", 0)
                >= 4
                and c
            ),
            what="refusals counted in the ingest processes to reach the store process",
        )
        assert counters["auth_refused:hello:permission_denied"] == 4
        assert counters["batches_duplicate"] == 3 and counters["batches_committed"] == 1
    finally:
        assert col.stop() == 0
