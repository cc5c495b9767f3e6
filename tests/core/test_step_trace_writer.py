"""The dependency-free step-trace writer a training loop calls (c4/step_trace.py)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from c4 import step_trace
from c4.step_trace import StepTraceWriter


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_one_json_line_per_op_with_the_rank_identity(tmp_path):
    w = StepTraceWriter(tmp_path, "j1", rank=3, dp_rank=1, pp_stage=1, tp_rank=0, host="n1", local_rank=3)
    w.op(5, "forward", 100.0, 0.25, microbatch=2)
    w.op(5, "all_reduce", 100.5, 0.01, comm="dp0")
    w.close()
    recs = _lines(tmp_path / "j1-rank3.jsonl")
    assert recs == [
        {
            "job": "j1",
            "rank": 3,
            "dp_rank": 1,
            "pp_stage": 1,
            "tp_rank": 0,
            "host": "n1",
            "local_rank": 3,
            "step": 5,
            "op": "forward",
            "start_s": 100.0,
            "duration_s": 0.25,
            "microbatch": 2,
        },
        {
            "job": "j1",
            "rank": 3,
            "dp_rank": 1,
            "pp_stage": 1,
            "tp_rank": 0,
            "host": "n1",
            "local_rank": 3,
            "step": 5,
            "op": "all_reduce",
            "start_s": 100.5,
            "duration_s": 0.01,
            "comm": "dp0",
        },
    ]


def test_flushes_whole_steps_only(tmp_path):
    w = StepTraceWriter(tmp_path, "j", rank=0, dp_rank=0, pp_stage=0, tp_rank=0)
    w.op(0, "forward", 1.0, 0.1)
    path = tmp_path / "j-rank0.jsonl"
    assert not path.exists()  # step 0 still running
    w.op(1, "forward", 2.0, 0.1)  # a new step flushes the last
    assert len(_lines(path)) == 1
    assert path.read_text().endswith("\n")
    w.close()
    assert len(_lines(path)) == 2


def test_appends_to_an_existing_file(tmp_path):
    for start in (1.0, 2.0):
        with StepTraceWriter(tmp_path, "j", rank=0, dp_rank=0, pp_stage=0, tp_rank=0) as w:
            w.op(0, "optimizer", start, 0.1)
    assert [r["start_s"] for r in _lines(tmp_path / "j-rank0.jsonl")] == [1.0, 2.0]


def test_rotates_at_the_size_limit_keeping_whole_lines(tmp_path):
    w = StepTraceWriter(tmp_path, "j", rank=0, dp_rank=0, pp_stage=0, tp_rank=0, rotate_bytes=400)
    for step in range(10):
        w.op(step, "forward", float(step), 0.1)
    w.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) > 1
    assert all(f.name.startswith("j-rank0") and f.suffix == ".jsonl" for f in files)
    steps = sorted(r["step"] for f in files for r in _lines(f))
    assert steps == list(range(10))
    assert all(f.stat().st_size <= 400 for f in files)


def test_timed_records_the_block(tmp_path):
    with StepTraceWriter(tmp_path, "j", rank=0, dp_rank=0, pp_stage=0, tp_rank=0) as w:
        with w.timed(2, "backward", microbatch=1):
            pass
    [rec] = _lines(tmp_path / "j-rank0.jsonl")
    assert (rec["step"], rec["op"], rec["microbatch"]) == (2, "backward", 1)
    assert rec["duration_s"] >= 0 and rec["start_s"] > 1.6e9


def test_timed_records_even_when_the_block_raises(tmp_path):
    w = StepTraceWriter(tmp_path, "j", rank=0, dp_rank=0, pp_stage=0, tp_rank=0)
    with pytest.raises(RuntimeError), w.timed(0, "forward"):
        raise RuntimeError("boom")
    w.close()
    assert _lines(tmp_path / "j-rank0.jsonl")[0]["op"] == "forward"


def test_rejects_unknown_ops_negative_durations_and_bad_identity(tmp_path):
    w = StepTraceWriter(tmp_path, "j", rank=0, dp_rank=0, pp_stage=0, tp_rank=0)
    with pytest.raises(ValueError, match="unknown op 'fwd'"):
        w.op(0, "fwd", 1.0, 0.1)
    with pytest.raises(ValueError, match="unknown op"), w.timed(0, "fwd"):
        pass
    with pytest.raises(ValueError, match="duration_s must be >= 0"):
        w.op(0, "forward", 1.0, -0.1)
    with pytest.raises(ValueError, match="rank must be a non-negative int"):
        StepTraceWriter(tmp_path, "j", rank=-1, dp_rank=0, pp_stage=0, tp_rank=0)
    with pytest.raises(ValueError, match="job"):
        StepTraceWriter(tmp_path, "", rank=0, dp_rank=0, pp_stage=0, tp_rank=0)


def test_the_writer_imports_only_the_standard_library():
    tree = ast.parse(Path(step_trace.__file__).read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules <= {"__future__", "json", "os", "time", "collections", "contextlib", "pathlib", "typing"}
