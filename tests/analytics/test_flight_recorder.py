"""Flight Recorder dumps: the rank that never entered the last collective is named."""

import json
import pickle
import subprocess
import sys

from c4.analytics.flight_recorder import DumpError, find_missing_ranks, load_dump


def entry(seq: int, state: str, op: str = "nccl:all_reduce", pg: str = "0") -> dict:
    return {
        "record_id": seq,
        "pg_id": int(pg),
        "process_group": (pg, "default_pg"),
        "collective_seq_id": seq,
        "p2p_seq_id": 0,
        "op_id": seq,
        "profiling_name": op,
        "time_created_ns": 1_000_000 * seq,
        "state": state,
        "time_discovered_started_ns": 1_000_100 * seq,
        "duration_ms": 1.5,
        "input_sizes": [[1024]],
    }


def write_dumps(tmp_path, fmt: str):
    d = tmp_path / fmt
    d.mkdir()
    for rank in range(4):
        last = 41 if rank == 2 else 42  # rank 2 never entered collective #42
        entries = [entry(s, "completed") for s in range(30, last)] + (
            [entry(42, "started")] if rank != 2 else []
        )
        dump = {
            "version": "2.4",
            "pg_config": {"0": {"name": "0", "desc": "default_pg", "ranks": "[0, 1, 2, 3]"}},
            "pg_status": {},
            "entries": entries,
        }
        path = d / f"nccl_trace_rank_{rank}"
        if fmt == "pickle":
            path.write_bytes(pickle.dumps(dump))
        else:
            path.write_text(json.dumps(dump))
    return d


def test_pickle_and_json_dumps_name_the_missing_rank(tmp_path):
    for fmt in ("pickle", "json"):
        d = write_dumps(tmp_path, fmt)
        dumps = [load_dump(p) for p in sorted(d.iterdir())]
        (v,) = find_missing_ranks(dumps)
        assert v.last_seq == 42 and v.missing == [2] and v.stuck == [0, 1, 3] and v.op == "nccl:all_reduce"


def test_cli_reports_and_skips_malformed(tmp_path):
    d = write_dumps(tmp_path, "pickle")
    (d / "nccl_trace_rank_9").write_bytes(b"\x80\x04garbage")
    (d / "notes.txt").write_text("hello")
    out = subprocess.run(
        [sys.executable, "-m", "c4.cli", "diagnose", "--flight-recorder", str(d)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "ranks [2] never entered collective #42" in out.stdout
    assert "skipped nccl_trace_rank_9" in out.stderr and "skipped notes.txt" in out.stderr
    js = subprocess.run(
        [sys.executable, "-m", "c4.cli", "diagnose", "--flight-recorder", str(d), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(js.stdout)[0]["missing"] == [2]
    assert json.loads(js.stdout)[0]["no_dump"] == []


def test_malicious_pickle_is_refused(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    p = tmp_path / "nccl_trace_rank_0"
    p.write_bytes(pickle.dumps({"entries": [Evil()]}))
    try:
        load_dump(p)
    except DumpError as exc:
        assert "refusing" in str(exc)
    else:
        raise AssertionError("a pickle that runs code must be refused")


def test_group_members_come_from_pg_config_ranks_text(tmp_path):
    """PyTorch writes pg_config ranks as text ("[0, 1]"); a member without a dump is named, not called missing."""
    dump = {
        "version": "2.5",
        "pg_config": {"0": {"name": "0", "desc": "default_pg", "ranks": "[0, 1]"}},
        "entries": [entry(1, "completed")],
    }
    path = tmp_path / "nccl_trace_rank_0.json"
    path.write_text(json.dumps(dump))
    d = load_dump(path)
    (v,) = find_missing_ranks([d])
    assert d.version == "2.5"
    assert v.members == [0, 1] and v.no_dump == [1] and v.missing == [] and v.ranks == [0]


def test_p2p_entries_do_not_count_as_the_collective(tmp_path):
    """PyTorch records a send/recv with the last collective's seq id and is_p2p=true (ProcessGroupNCCL pointToPoint)."""
    dumps = []
    for rank in (0, 1):
        entries = [entry(5, "completed")]
        if rank == 0:
            entries.append(entry(5, "scheduled", op="nccl:send") | {"is_p2p": True, "p2p_seq_id": 1})
        path = tmp_path / f"nccl_trace_rank_{rank}"
        path.write_text(json.dumps({"version": "2.5", "entries": entries}))
        dumps.append(load_dump(path))
    (v,) = find_missing_ranks(dumps)
    assert v.last_seq == 5 and v.stuck == [] and v.missing == [] and v.op == "nccl:all_reduce"


def test_format_1_x_seq_id_and_pg_config_lists(tmp_path):
    """Dumps of format 1.x (TraceUtils.h, version_val "1.4") say seq_id, pg_id and pg_config {pg_id: [ranks]}."""
    dumps = []
    for rank in (0, 1):
        seqs = (7, 8) if rank == 0 else (7,)
        entries = [
            {"record_id": s, "pg_id": 0, "seq_id": s, "op_id": s, "profiling_name": "nccl:all_reduce"}
            | {"state": "completed" if s == 7 else "started"}
            for s in seqs
        ]
        path = tmp_path / f"nccl_trace_rank_{rank}"
        path.write_bytes(pickle.dumps({"entries": entries, "version": "1.4", "pg_config": {0: [0, 1, 2]}}))
        dumps.append(load_dump(path))
    (v,) = find_missing_ranks(dumps)
    assert v.process_group == "0" and v.last_seq == 8 and v.missing == [1] and v.stuck == [0]
    assert v.members == [0, 1, 2] and v.no_dump == [2]


def test_pg_status_counts_when_entries_are_gone(tmp_path):
    """pg_status (keyed by pg_id; text in JSON dumps) says how far a rank got when its ring buffer lost the entry."""
    dumps = []
    for rank, (enqueued, completed) in {0: ("9", "8"), 1: ("8", "8")}.items():
        dump = {
            "version": "2.10",
            "pg_config": {"0": {"name": "0", "desc": "default_pg", "ranks": "[0, 1]"}},
            "pg_status": {
                "0": {
                    "last_enqueued_collective": enqueued,
                    "last_started_collective": "-1",
                    "last_completed_collective": completed,
                }
            },
            "entries": [entry(7, "completed")],
        }
        path = tmp_path / f"nccl_trace_rank_{rank}"
        path.write_text(json.dumps(dump))
        dumps.append(load_dump(path))
    (v,) = find_missing_ranks(dumps)
    assert v.last_seq == 9 and v.missing == [1] and v.stuck == [0] and v.last_seq_by_rank == {0: 9, 1: 8}
