"""Operators hold and release remediation at run time on a real collector: a held job's fault records
'held' and runs nothing, a release runs each step once, holds survive a restart, a cluster-wide hold
covers every job, read-only tokens and bad requests are refused, and the config's holds stay."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import grpc
from testkit.procs import C4, CollectorProc
from testkit.wait import wait_for
from testkit.wire import batch, code_of, stub, token_security

from c4.faults import hold_rows, list_holds, set_hold
from c4.query import QueryError, query_arrow
from c4.telemetry.v1 import telemetry_pb2 as pb

FLEET_TOKEN = "fleet-any-agent-5e1a0c77d9"
READER_TOKEN = "reader-grafana-2b6f8e0a13"
OPERATOR_TOKEN = "operator-ops-9a4d61c0e7f2"


def script(path, name: str):
    """A shell script that appends its name and arguments to calls.txt next to it."""
    p = path / name
    p.write_text(f'#!/bin/sh\necho "{name} $@" >> "$(dirname "$0")/calls.txt"\n')
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return p


def collector(tmp_path, port: int | None = None) -> CollectorProc:
    """A collector with tokens, real isolation and restart commands, and the config holding job 'frozen'."""
    drain, requeue = script(tmp_path, "drain.sh"), script(tmp_path, "requeue.sh")
    tokens = tmp_path / "tokens"
    tokens.write_text(
        f"{FLEET_TOKEN} agent *\n{READER_TOKEN} reader grafana\n{OPERATOR_TOKEN} reader,operator ops\n"
    )
    cfg = tmp_path / "c4.toml"
    cfg.write_text(
        "[collector]\ndiagnose_interval_s = 0.5\ndiagnose_window_s = 600\nmetrics_interval_s = 3600\n"
        f'tokens_file = "{tokens}"\nremediation_hold_jobs = ["frozen"]\n'
        f'isolation_command = "{drain} {{node}}"\nisolation_dry_run = false\n'
        f'restart = "command"\nrestart_command = "{requeue} {{job}}"\nrestart_dry_run = false\n'
    )
    return CollectorProc(tmp_path, port=port, extra=["--config", str(cfg)]).start()


def xid_on(address: str, tmp_path, node: str, job: str) -> str:
    """An agent on ``node`` of ``job`` reports Xid 79 (GPU fallen off the bus: drain); the fault id."""
    agent = stub(address, token_security(tmp_path, FLEET_TOKEN))
    agent.Hello(pb.HelloRequest(agent_id=node, hostname=node, job=job), timeout=30)
    row = {
        "kind": "xid",
        "source": "kmsg",
        "gpu_index": 3,
        "pci_bus_id": "0000:2b:00.0",
        "xid": 79,
        "xid_name": "GPU has fallen off the bus",
        "category": "bus",
        "meaning": "GPU has fallen off the bus",
        "action": "drain_node",
        "message": "NVRM: Xid (PCI:0000:2b:00): 79, pid=0, GPU has fallen off the bus.",
    }
    acks = list(agent.Push(iter([batch(node, 1, "gpu_events", [row])]), timeout=30))
    assert [a.code for a in acks] == [0], acks
    return f"xid79:{node}/gpu3"


def calls(tmp_path) -> list[str]:
    """The commands remediation ran, in order."""
    path = tmp_path / "calls.txt"
    return path.read_text().splitlines() if path.exists() else []


def outcomes(address: str, security, fault_id: str) -> list[tuple[str, str]]:
    """(sink, outcome) of the fault's remediation actions, in order."""
    t, _ = query_arrow(
        security.channel(address),
        f"SELECT sink, outcome FROM actions WHERE fault_id = '{fault_id}' "
        "AND sink IN ('isolation', 'restart') ORDER BY ts, sink",
    )
    return [(r["sink"], r["outcome"]) for r in t.to_pylist()]


def redetected_since_actions(address: str, security, fault_id: str) -> bool:
    """Whether a diagnosis pass stored the fault again after its newest remediation action."""
    t, _ = query_arrow(
        security.channel(address),
        f"SELECT count(*) AS n FROM faults WHERE fault_id = '{fault_id}' AND ts > "
        f"(SELECT max(ts) FROM actions WHERE fault_id = '{fault_id}')",
    )
    return t.column(0)[0].as_py() >= 2


def test_job_hold_survives_a_restart_and_its_release_runs_each_step_once(tmp_path):
    ops = token_security(tmp_path, OPERATOR_TOKEN)
    reader = token_security(tmp_path, READER_TOKEN)
    col = collector(tmp_path)
    try:
        reply = set_hold(ops.channel(col.address), "train", True, "incident 42", "alice")
        assert reply.changed and reply.message == "remediation held job train"
        assert [(h["scope"], h["job"], h["source"], h["by"]) for h in hold_rows(reply)] == [
            ("job", "frozen", "config", "collector config"),
            ("job", "train", "operator", "alice"),
        ]
        again = set_hold(ops.channel(col.address), "train", True, "", "bob")
        assert not again.changed and "already held job train" in again.message
        fault = xid_on(col.address, tmp_path, "host2", "train")
        wait_for(
            lambda: outcomes(col.address, reader, fault) == [("isolation", "held"), ("restart", "held")],
            timeout_s=60,
            what="both steps recorded as held",
        )
        t, _ = query_arrow(
            reader.channel(col.address), f"SELECT detail FROM actions WHERE fault_id = '{fault}' LIMIT 1"
        )
        assert "job train held by alice (c4 faults hold) (incident 42)" in t.column(0)[0].as_py()
        wait_for(lambda: redetected_since_actions(col.address, reader, fault), 60, "re-detections")
        assert calls(tmp_path) == []  # held: no command ran
    finally:
        assert col.stop() == 0
    col = collector(tmp_path, port=col.port)  # the same store: the hold is loaded again
    try:
        held = hold_rows(list_holds(reader.channel(col.address)))
        assert [(h["job"], h["source"], h["by"], h["note"]) for h in held] == [
            ("frozen", "config", "collector config", "remediation_hold_jobs"),
            ("train", "operator", "alice", "incident 42"),
        ]
        wait_for(
            lambda: redetected_since_actions(col.address, reader, fault), 60, "re-detection after restart"
        )
        assert calls(tmp_path) == []
        assert outcomes(col.address, reader, fault) == [("isolation", "held"), ("restart", "held")]  # once

        reply = set_hold(ops.channel(col.address), "train", False, "fixed", "alice")
        # the release resumes the two held steps, unless a diagnosis pass between the hold lifting and the
        # resume took them first (at its re-detection): either way each runs once, checked below
        assert reply.changed and reply.resumed_steps in (0, 1, 2), reply
        assert [h.job for h in reply.holds] == ["frozen"]
        wait_for(lambda: len(calls(tmp_path)) == 2, 60, "the released steps to run")
        assert calls(tmp_path) == ["drain.sh host2", "requeue.sh train"]  # isolation, then the restart
        # a step's actions row is stored after its command returns: wait for both rows, so that the
        # re-detection awaited next comes after them (not merely after the held rows)
        ran = [("isolation", "held"), ("restart", "held"), ("isolation", "ran"), ("restart", "ran")]
        wait_for(lambda: outcomes(col.address, reader, fault) == ran, 60, "the released steps' actions rows")
        wait_for(
            lambda: redetected_since_actions(col.address, reader, fault), 60, "re-detection after release"
        )
        assert calls(tmp_path) == ["drain.sh host2", "requeue.sh train"]  # never twice
        assert outcomes(col.address, reader, fault) == ran  # and recorded once
        t, _ = query_arrow(
            reader.channel(col.address),
            "SELECT scope, job, hold, set_by, caller, note FROM remediation_holds ORDER BY ts",
        )
        assert t.to_pylist() == [
            {
                "scope": "job",
                "job": "train",
                "hold": True,
                "set_by": "alice",
                "caller": "ops",
                "note": "incident 42",
            },
            {
                "scope": "job",
                "job": "train",
                "hold": False,
                "set_by": "alice",
                "caller": "ops",
                "note": "fixed",
            },
        ]
    finally:
        assert col.stop() == 0


def faults_cli(address: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """`c4 faults --collector ADDRESS ARGS...` with the operator's token."""
    token = tmp_path / "operator-token"
    token.write_text(OPERATOR_TOKEN + "\n")
    env = {**os.environ, "C4_QUERY_TOKEN_FILE": str(token), "C4_CONFIG": ""}
    return subprocess.run(
        [*C4, "faults", "--collector", address, *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_cluster_hold_from_the_cli_refusals_and_config_holds(tmp_path):
    ops = token_security(tmp_path, OPERATOR_TOKEN)
    reader = token_security(tmp_path, READER_TOKEN)
    col = collector(tmp_path)
    try:
        # a read-only token may list holds but not set them
        with_reader = stub(col.address, reader)
        denied = code_of(lambda: with_reader.SetHold(pb.HoldRequest(scope="cluster", hold=True), timeout=30))
        assert denied == grpc.StatusCode.PERMISSION_DENIED
        try:
            set_hold(reader.channel(col.address), None, True)
        except QueryError as exc:
            assert "SetHold: token of 'grafana' lacks the operator role" in str(exc)
        else:
            raise AssertionError("a reader set a hold")
        # bad requests: refused naming the field, the server unharmed
        bad = {
            "scope": pb.HoldRequest(scope="galaxy", hold=True),
            "job is empty": pb.HoldRequest(scope="job", job="", hold=True),
            "with scope cluster": pb.HoldRequest(scope="cluster", job="train", hold=True),
            "job is 300 characters long": pb.HoldRequest(scope="job", job="j" * 300, hold=True),
            "job 'a\\nb' holds control characters": pb.HoldRequest(scope="job", job="a\nb", hold=True),
            "note is 100000 characters long": pb.HoldRequest(scope="cluster", hold=True, note="n" * 100_000),
            "by is 200 characters long": pb.HoldRequest(scope="cluster", hold=True, by="b" * 200),
        }
        with_ops = stub(col.address, ops)
        for words, request in bad.items():
            try:
                with_ops.SetHold(request, timeout=30)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, words
                assert words in exc.details(), (words, exc.details())
            else:
                raise AssertionError(f"accepted a request with {words}")
        assert [h.source for h in list_holds(ops.channel(col.address)).holds] == ["config"]  # nothing stored
        counters = with_ops.Stats(pb.StatsRequest(), timeout=30).counters
        assert counters["hold_requests_refused"] == len(bad)
        # a config hold cannot be released at run time: the reply says so
        reply = set_hold(ops.channel(col.address), "frozen", False)
        assert (
            not reply.changed
            and "stays held by the collector config (remediation_hold_jobs)" in reply.message
        )

        # an empty --job (a script's unset $JOB) is refused, never taken as cluster-wide
        for verb in ("hold", "release"):
            empty = faults_cli(col.address, tmp_path, verb, "--job", "")
            assert empty.returncode == 2 and "--job needs a job name" in empty.stderr, empty
        try:
            set_hold(ops.channel(col.address), "", True)
        except QueryError as exc:
            assert "job" in str(exc)
        else:
            raise AssertionError("an empty job was held")
        assert hold_rows(list_holds(ops.channel(col.address)))[0]["scope"] == "job"  # only the config's
        out = faults_cli(col.address, tmp_path, "hold", "--all", "--note", "maintenance", "--by", "carol")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("remediation held cluster-wide\n") and "carol" in out.stdout
        fault = xid_on(col.address, tmp_path, "host3", "other")
        wait_for(
            lambda: outcomes(col.address, reader, fault) == [("isolation", "held"), ("restart", "held")],
            timeout_s=60,
            what="a fault of any job held cluster-wide",
        )
        listed = faults_cli(col.address, tmp_path, "holds", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [(r["scope"], r["job"], r["source"], r["by"], r["note"]) for r in rows] == [
            ("job", "frozen", "config", "collector config", "remediation_hold_jobs"),
            ("cluster", "", "operator", "carol", "maintenance"),
        ]
        assert calls(tmp_path) == []
        out = faults_cli(col.address, tmp_path, "release", "--all", "--json")
        assert out.returncode == 0, out.stderr
        released = json.loads(out.stdout)
        assert released["changed"] and released["resumed_steps"] in (0, 1, 2), released  # as above
        assert released["message"].startswith("remediation released cluster-wide")
        wait_for(lambda: len(calls(tmp_path)) == 2, 60, "the released steps to run")
        assert calls(tmp_path) == ["drain.sh host3", "requeue.sh other"]
        # a fault of the job the config holds stays held after the cluster-wide release
        frozen = xid_on(col.address, tmp_path, "host4", "frozen")
        wait_for(
            lambda: outcomes(col.address, reader, frozen) == [("isolation", "held"), ("restart", "held")],
            timeout_s=60,
            what="the config's job hold",
        )
        assert calls(tmp_path) == ["drain.sh host3", "requeue.sh other"]
    finally:
        assert col.stop() == 0
