"""step_trace sampler: JSON lines tailed, Parquet read once complete, hostile files counted per reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from c4.agent.batcher import convert_rows
from c4.agent.registry import SamplerContext, build_sampler
from c4.agent.runner import ScheduledSampler
from c4.agent.sampler import SkipReasons, StartupPolicy
from c4.agent.step_trace import OPS, StepTraceSampler, trace_row
from c4.catalogue import load
from c4.step_trace import StepTraceWriter

T0 = 1_764_770_000.0


def op(rank: int = 0, step: int = 1, name: str = "forward", start: float = T0, **extra) -> dict:
    """One trace record of the documented format."""
    rec = {
        "job": "job7",
        "rank": rank,
        "dp_rank": 0,
        "pp_stage": 0,
        "tp_rank": 0,
        "step": step,
        "op": name,
        "start_s": start,
        "duration_s": 0.25,
    }
    return rec | extra


def append(path: Path, *items) -> None:
    with open(path, "ab") as f:
        for it in items:
            f.write(it if isinstance(it, bytes) else (json.dumps(it) + "\n").encode())


def sampler(d: Path, **kw) -> StepTraceSampler:
    s = StepTraceSampler(d, **kw)
    s.probe()
    return s


def rows(s: StepTraceSampler) -> list[dict]:
    return s.sample(time.time_ns()).get("step_ops", [])


def test_json_lines_become_typed_step_ops_rows(tmp_path):
    append(
        tmp_path / "rank0.jsonl",
        op(microbatch=3, host="node-a", local_rank=5, comm="dp0"),
        op(name="optimizer"),
    )
    s = sampler(tmp_path)
    got = rows(s)
    assert [r["op"] for r in got] == ["forward", "optimizer"]
    first = got[0]
    assert (
        first["job"],
        first["rank"],
        first["microbatch"],
        first["host"],
        first["local_rank"],
        first["comm"],
    ) == (
        "job7",
        0,
        3,
        "node-a",
        5,
        "dp0",
    )
    assert first["ts"].isoformat() == "2025-12-03T13:53:20"  # ts is the op's start
    assert got[1]["microbatch"] is None and got[1]["host"] == "" and got[1]["ep_rank"] is None
    converted = convert_rows(load(), "step_ops", got, {"node": "n1"})
    assert converted.dropped == 0 and converted.table.num_rows == 2
    assert s.records_skipped == 0


def test_only_whole_lines_and_only_new_ones(tmp_path):
    path = tmp_path / "r.jsonl"
    line = json.dumps(op(step=2)).encode()
    append(path, op(step=1), line[:30])
    s = sampler(tmp_path)
    assert [r["step"] for r in rows(s)] == [1]  # the half-written line waits
    append(path, line[30:] + b"\n")
    assert [r["step"] for r in rows(s)] == [2]
    assert rows(s) == []
    assert s.records_skipped == 0


def test_rotation_and_truncation_lose_nothing(tmp_path):
    path = tmp_path / "r.jsonl"
    append(path, op(step=1))
    s = sampler(tmp_path)
    assert len(rows(s)) == 1
    append(path, op(step=2))
    path.rename(tmp_path / "r.jsonl.1")  # rotated away: the old name's new file and the rest of the old one
    append(path, op(step=3))
    assert sorted(r["step"] for r in rows(s)) == [2, 3]
    path.write_text("")  # truncated (copytruncate), then written on from the start
    assert rows(s) == []
    append(path, op(step=4))
    assert [r["step"] for r in rows(s)] == [4]


def test_directory_that_appears_later_and_one_never_configured(tmp_path):
    d = tmp_path / "later"
    s = sampler(d)
    assert rows(s) == []
    d.mkdir()
    append(d / "a.jsonl", op())
    assert len(rows(s)) == 1
    sched = ScheduledSampler(StepTraceSampler(None), 1.0, StartupPolicy.IGNORE)
    assert not sched.probe()  # unset: the sampler is off, the agent runs on


def test_hostile_lines_are_counted_per_reason_and_neighbours_kept(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = op(step=9)
    append(
        path,
        good,
        json.dumps(op())[:40].encode(),  # a writer died mid-line ...
        good,  # ... and the next line glues onto it: one unreadable line, this one is lost with it
        op(rank="3"),
        op(duration_s="slow"),
        op(rank=True),
        b'{"job":"job7","rank":0,"dp_rank":0,"pp_stage":0,"tp_rank":0,'
        b'"step":1,"op":"forward","start_s":Infinity,"duration_s":1}\n',
        op(name="warp"),
        op(duration_s=-0.1),
        {k: v for k, v in op().items() if k != "tp_rank"},
        op(rank=2**40),
        op(pp_stage=-1),
        op(start_s=1e300),
        op(start_s=32_503_680_000.0),  # the year 3000: Python dates it, the store (int64 ns) cannot
        [1, 2, 3],
        b"\x00\xff\xfe binary junk \x89PNG\r\n",
        b"\n",  # blank lines are not records
        b'{"job": "' + b"x" * (2 << 20) + b'"}\n',  # a 2 MiB line
        good,
    )
    s = sampler(tmp_path)
    got = rows(s)
    assert [r["step"] for r in got] == [9, 9]
    assert s.skipped_by_reason == {
        "not_json": 2,
        "wrong_type": 4,
        "unknown_op": 1,
        "negative_duration": 1,
        "missing_column": 1,
        "out_of_range": 3,
        "not_an_object": 1,
        "line_too_long": 1,
        "negative_rank": 1,
    }
    assert s.records_skipped == 15
    assert isinstance(s, SkipReasons)


def write_parquet(path: Path, recs: list[dict], mtime_s: float | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(recs), tmp)
    os.replace(tmp, path)
    if mtime_s is not None:
        os.utime(path, (mtime_s, mtime_s))


def test_parquet_is_read_once_when_complete(tmp_path):
    path = tmp_path / "job7-rank0.parquet"
    write_parquet(path, [op(step=s) for s in range(5)])
    s = sampler(tmp_path, settle_s=30)
    assert rows(s) == []  # just written: it may still be growing
    os.utime(path, (time.time() - 60, time.time() - 60))
    assert sorted(r["step"] for r in rows(s)) == [0, 1, 2, 3, 4]
    assert rows(s) == []  # read once
    write_parquet(path, [op(step=7)], mtime_s=time.time() - 60)  # replaced under its name: a new file
    assert [r["step"] for r in rows(s)] == [7]
    assert s.records_skipped == 0


def test_parquet_is_read_in_slices_of_max_rows_per_tick(tmp_path):
    write_parquet(tmp_path / "a.parquet", [op(step=s) for s in range(25)], mtime_s=time.time() - 60)
    s = sampler(tmp_path, settle_s=0, max_rows_per_tick=10)
    sizes = [len(rows(s)) for _ in range(4)]
    assert sizes == [10, 10, 5, 0]


def test_hostile_parquet_files(tmp_path):
    old = time.time() - 60
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really" * 10)
    os.utime(tmp_path / "junk.parquet", (old, old))
    write_parquet(tmp_path / "strings.parquet", [op(rank="0"), op(rank="1")], mtime_s=old)  # rank as text
    write_parquet(tmp_path / "mixed.parquet", [op(), op(name="nope"), op(duration_s=-1.0)], mtime_s=old)
    s = sampler(tmp_path, settle_s=5)
    assert len(rows(s)) == 1
    assert s.skipped_by_reason == {
        "unreadable_parquet": 1,
        "wrong_type": 2,
        "unknown_op": 1,
        "negative_duration": 1,
    }
    assert rows(s) == []  # an unreadable file is counted once, not every tick


def test_every_op_of_the_format_is_accepted():
    assert len(OPS) == 13
    for name in OPS:
        assert trace_row(op(name=name))["op"] == name


def test_registry_builds_it_from_config(tmp_path):
    ctx = SamplerContext(node="n1", job="", labels={})
    s = build_sampler("step_trace", {"trace_dir": str(tmp_path), "settle_s": 2}, ctx)
    assert isinstance(s, StepTraceSampler) and s.settle_s == 2
    with pytest.raises(ValueError, match="step_trace"):
        build_sampler("step_trace", {"trace_directory": str(tmp_path)}, ctx)


def test_agent_test_flag_reads_a_trace_directory_once(tmp_path):
    """`c4 agent --test --samplers step_trace --step-trace DIR`: JSON lines and a just-written Parquet file."""
    append(tmp_path / "r0.jsonl", op(step=1), op(name="warp"))
    write_parquet(
        tmp_path / "r1.parquet", [op(rank=1, step=2)]
    )  # fresh: --test does not wait for it to settle
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "c4.cli",
            "agent",
            "--test",
            "--samplers",
            "step_trace",
            "--step-trace",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "### table step_ops (2 rows)" in out.stdout
    assert "1 records skipped as unreadable (unknown_op: 1)" in out.stdout


def test_files_of_the_step_trace_writer_are_read_once_across_its_rotations(tmp_path):
    """c4.step_trace.StepTraceWriter (what a training loop calls) rotating x.jsonl -> x.1.jsonl while the agent reads."""
    s = sampler(tmp_path)
    got: list[dict] = []
    with StepTraceWriter(tmp_path, "job7", rank=3, dp_rank=1, pp_stage=1, tp_rank=0, rotate_bytes=2000) as w:
        for step in range(40):
            for k, name in enumerate(("forward", "backward", "optimizer")):
                w.op(step, name, T0 + step + k * 0.1, 0.05, microbatch=0 if k < 2 else None)
            if step % 7 == 0:
                got += rows(s)  # the agent reads between the writer's flushes and rotations
    got += rows(s)
    assert len(list(tmp_path.glob("job7-rank3.*.jsonl"))) >= 3  # it did rotate
    assert sorted((r["step"], r["op"]) for r in got) == sorted(
        (step, name) for step in range(40) for name in ("forward", "backward", "optimizer")
    )
    assert s.records_skipped == 0


def test_the_documented_example_lines_are_read_whole(tmp_path):
    """docs/step-trace.md's example, as a job would write it: three rows, every column read, nothing skipped."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "step-trace.md").read_text()
    block = doc.split("```json\n", 1)[1].split("```", 1)[0]
    (tmp_path / "4711-rank2.jsonl").write_text(block)
    s = sampler(tmp_path)
    got = rows(s)
    assert s.records_skipped == 0 and [r["op"] for r in got] == ["recv_forward", "forward", "send_forward"]
    fwd = got[1]
    assert (
        fwd["job"],
        fwd["rank"],
        fwd["pp_stage"],
        fwd["step"],
        fwd["microbatch"],
        fwd["host"],
        fwd["local_rank"],
    ) == (
        "4711",
        2,
        1,
        12,
        3,
        "node0",
        2,
    )
    assert fwd["start_s"] == 1700000123.4052 and fwd["duration_s"] == 0.0101
    assert fwd["ts"].isoformat() == "2023-11-14T22:15:23.405200"
