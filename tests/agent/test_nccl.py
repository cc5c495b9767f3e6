"""NCCL sources on recorded-format samples, including malformed input."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pyarrow as pa
import pytest

from c4.agent.nccl_debug_log import DebugLogParser, DebugLogSampler
from c4.agent.nccl_inspector import InspectorSampler
from c4.agent.nccl_labels import job_from_env, labels_from_env
from c4.agent.nccl_ras import RasSampler
from c4.catalogue import load

DATA = Path(__file__).resolve().parents[1] / "data" / "nccl"


def typed(table: str, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"node": "n", "job": "", **r} for r in rows], schema=load()[table].arrow_schema
    )


def test_inspector_rows_garbage_and_partial_lines(tmp_path):
    d = tmp_path / "dump"
    d.mkdir()
    lines = (DATA / "inspector-rank2.log").read_text().splitlines(keepends=True)
    (d / "host-pid1.log").write_text("".join(lines[:-1]) + lines[-1][:40])  # last line written half
    s = InspectorSampler(d)
    s.probe()
    rows = s.sample(0)["nccl_collectives"]
    assert [(r["coll"], r["coll_sn"]) for r in rows] == [("AllReduce", 1407), ("ReduceScatter", 1408)]
    assert rows[0]["msg_size_bytes"] == 17179869184 and rows[0]["busbw_gbs"] == pytest.approx(485.119099)
    assert rows[0]["ts"].year == 2025 and rows[1]["start_ts"] is not None and rows[0]["rank"] == 2
    assert s.records_skipped == 2  # "this is not json" and the AllGather line cut off by a dying writer
    with open(d / "host-pid1.log", "a") as f:
        f.write(lines[-1][40:])  # the partial p2p line completes
    rows2 = s.sample(0)["nccl_collectives"]
    assert [(r["kind"], r["coll"], r["peer"]) for r in rows2] == [("p2p", "Send", 3)]
    assert s.records_skipped == 2
    typed("nccl_collectives", rows + rows2)


def test_inspector_rotation_and_new_files(tmp_path):
    d = tmp_path / "dump"
    d.mkdir()
    obj = json.loads((DATA / "inspector-rank2.log").read_text().splitlines()[0])
    (d / "a.log").write_text(json.dumps(obj) + "\n")
    s = InspectorSampler(d)
    s.probe()
    assert len(s.sample(0)["nccl_collectives"]) == 1
    shutil.move(d / "a.log", d / "a.log.1")
    (d / "a.log").write_text(json.dumps({**obj, "coll_perf": {**obj["coll_perf"], "coll_sn": 1500}}) + "\n")
    (d / "b.log").write_text(json.dumps({**obj, "header": {**obj["header"], "rank": 5}}) + "\n")
    rows = s.sample(0)["nccl_collectives"]
    # a.log.1 is the a.log already read (the same file renamed): its record is not read a second time
    assert sorted((r["rank"], r["coll_sn"]) for r in rows) == [(2, 1500), (5, 1407)]


def test_debug_log_topology():
    p = DebugLogParser()
    rows = [r for line in (DATA / "nccl-debug-rank3.log").read_text().splitlines() for r in p.parse(line)]
    kinds = [r["kind"] for r in rows]
    # START and COMPLETE of one comm are one init row; rank 0's ring line is one row per member
    assert kinds.count("init") == 1 and kinds.count("ring") == 16 and kinds.count("tree") == 2
    assert p.skipped_by_reason == {"ring": 1}  # the garbled "Channel 02/0 :" line
    conns = [r for r in rows if r["kind"] == "conn"]
    got = {
        (r["channel"], r["direction"], r["peer_rank"], r["transport"], r["nic_index"], r["gdr"])
        for r in conns
    }
    assert got == {
        (0, "send", 4, "P2P", None, False),
        (2, "send", 11, "NET", 3, True),
        (2, "recv", 11, "NET", 3, True),
        (1, "recv", 15, "NET", 0, True),
        (1, "send", 2, "SHM", None, False),
    }
    assert all(r["comm_id"] == "0x9a3f1c22d1e0b7a4" for r in rows)
    ring = [r for r in rows if r["kind"] == "ring" and r["rank"] == 3][0]
    assert ring["peer_rank"] == 4 and ring["rank"] == 3 and ring["n_ranks"] == 16
    typed("nccl_topology", rows)


def test_debug_log_sampler_tails(tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    shutil.copy(DATA / "nccl-debug-rank3.log", d / "n1.4242.log")
    s = DebugLogSampler(d)
    s.probe()
    assert len([r for r in s.sample(0)["nccl_topology"] if r["kind"] == "conn"]) == 5


def test_ras_not_running_is_quiet(caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = RasSampler(f"127.0.0.1:{port}", timeout_s=0.5, poll_every_ticks=1)
    for _ in range(5):
        assert s.sample(0) == {}
    assert s.errors == 5 and caplog.text.count("not reachable") <= 1


def test_labels_from_env():
    env = {
        "SLURM_JOB_ID": "777",
        "SLURM_PROCID": "12",
        "LOCAL_RANK": "4",
        "WORLD_SIZE": "64",
        "POD_NAME": "w-3",
    }
    assert labels_from_env(env) == {
        "rank": "12",
        "local_rank": "4",
        "world_size": "64",
        "slurm_job_id": "777",
        "k8s_pod": "w-3",
    }
    assert (
        job_from_env(env) == "777" and job_from_env({"C4_JOB": "x", **env}) == "x" and job_from_env({}) == ""
    )
