"""``c4 diagnose --trace``: the JSON shape, the human table, exit 2 with the reader's message on a bad trace."""

from __future__ import annotations

import json

from testkit.step_sim import SimCause, simulate

from c4.cli import main


def test_json_names_the_cause_and_its_cost(tmp_path, capsys):
    trace = simulate(pp=4, dp=2, seed=1, causes=[SimCause("slow_worker", ranks=[2], factor=2.3)], hosts=True)
    (tmp_path / "t").mkdir()
    for (rank,), part in trace.partition_by("rank", as_dict=True).items():
        part.write_parquet(tmp_path / "t" / f"job1-rank{rank}.parquet")
    assert main(["diagnose", "--trace", str(tmp_path / "t"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    [job] = out["jobs"]
    assert {
        "job",
        "steps",
        "actual_step_s",
        "ideal_step_s",
        "slowdown_frac",
        "by_worker",
        "by_stage",
        "by_op",
        "findings",
    } <= set(job)
    assert job["job"] == "job1" and job["steps"] == 12
    assert job["actual_step_s"] > job["ideal_step_s"] > 0
    [f] = job["findings"]
    assert (f["class"], f["component"], f["job"]) == ("slow_worker", "node0/gpu2", "job1")
    assert f["slowdown_frac"] > 0.5
    assert "job1/rank0" in f["affected"] and "job1/rank2" not in f["affected"]
    assert job["by_worker"][0]["rank"] == 2


def test_table_without_json(tmp_path, capsys):
    simulate(pp=2, dp=2, seed=3).write_parquet(tmp_path / "t.parquet")
    assert main(["diagnose", "--trace", str(tmp_path / "t.parquet")]) == 0
    out = capsys.readouterr().out
    assert "job job1: 12 steps" in out and "no cause found" in out


def test_bad_trace_exits_2_with_the_location(tmp_path, capsys):
    p = tmp_path / "t.jsonl"
    p.write_text('{"job": "j", "rank": 0}\n')
    assert main(["diagnose", "--trace", str(p), "--json"]) == 2
    assert "t.jsonl:1: missing column 'dp_rank'" in capsys.readouterr().err


def test_start_out_of_range_exits_2_with_the_location(tmp_path, capsys):
    rec = {"job": "j", "rank": 0, "dp_rank": 0, "pp_stage": 0, "tp_rank": 0, "step": 0, "op": "forward"}
    p = tmp_path / "t.jsonl"
    p.write_text(
        json.dumps({**rec, "start_s": 1.8e9, "duration_s": 0.1})
        + "\n"
        + json.dumps({**rec, "step": 1, "start_s": 1e300, "duration_s": 0.1})
        + "\n"
    )
    assert main(["diagnose", "--trace", str(p), "--json"]) == 2
    assert "t.jsonl:2: column 'start_s' is out of range" in capsys.readouterr().err


def test_help_points_to_the_format(capsys):
    try:
        main(["diagnose", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "--trace" in out and "docs/step-trace.md" in out
