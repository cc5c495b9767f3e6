"""The step-trace reader: JSONL and Parquet, files and directories, and a clear error for every bad input."""

from __future__ import annotations

import json

import polars as pl
import pytest
from testkit.step_sim import simulate

from c4.analytics.step_trace import OPS, TraceError, read_trace, validate_trace
from c4.step_trace import StepTraceWriter


def _rec(**over):
    rec = {
        "job": "j",
        "rank": 0,
        "dp_rank": 0,
        "pp_stage": 0,
        "tp_rank": 0,
        "step": 0,
        "op": "forward",
        "start_s": 1.0,
        "duration_s": 0.5,
    }
    rec.update(over)
    return rec


def _write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_ops_are_the_contract_strings():
    assert set(OPS) == {
        "forward",
        "backward",
        "optimizer",
        "send_forward",
        "recv_forward",
        "send_backward",
        "recv_backward",
        "reduce_scatter",
        "all_gather",
        "all_reduce",
        "all_to_all",
        "data_load",
        "checkpoint",
    }


def test_reads_jsonl_parquet_and_a_directory(tmp_path):
    trace = simulate(pp=2, dp=2, steps=3, seed=0)
    trace.write_parquet(tmp_path / "all.parquet")
    (tmp_path / "ranks").mkdir()
    for (rank,), part in trace.partition_by("rank", as_dict=True).items():
        recs = [{k: v for k, v in r.items() if v is not None} for r in part.to_dicts()]
        _write(tmp_path / "ranks" / f"j-rank{rank}.jsonl", recs)
    pq = read_trace(tmp_path / "all.parquet")
    ranks = read_trace(tmp_path / "ranks")
    assert pq.height == ranks.height == trace.height
    assert ranks["microbatch"].drop_nulls().len() == trace["microbatch"].drop_nulls().len()
    assert (
        ranks.sort("rank", "start_s")["start_s"].to_list()
        == trace.sort("rank", "start_s")["start_s"].to_list()
    )
    # one rank's file alone lacks the peers of its sends and receives
    with pytest.raises(
        TraceError, match=r"j-rank0\.jsonl:\d+: column 'op': (send|recv)_\w+ .* has no matching"
    ):
        read_trace(tmp_path / "ranks" / "j-rank0.jsonl")


def test_unknown_op_names_file_line_and_column(tmp_path):
    p = _write(tmp_path / "t.jsonl", [_rec(), _rec(op="fwd")])
    with pytest.raises(TraceError, match=r"t\.jsonl:2: column 'op': unknown op 'fwd'"):
        read_trace(p)


def test_missing_column_names_line(tmp_path):
    rec = _rec()
    del rec["dp_rank"]
    p = _write(tmp_path / "t.jsonl", [_rec(), rec])
    with pytest.raises(TraceError, match=r"t\.jsonl:2: missing column 'dp_rank'"):
        read_trace(p)


def test_bad_type_names_line_and_column(tmp_path):
    p = _write(tmp_path / "t.jsonl", [_rec(), _rec(), _rec(rank="3")])
    with pytest.raises(TraceError, match=r"t\.jsonl:3: column 'rank' must be an integer, got '3'"):
        read_trace(p)


def test_negative_duration_names_line(tmp_path):
    p = _write(tmp_path / "t.jsonl", [_rec(), _rec(duration_s=-0.1)])
    with pytest.raises(TraceError, match=r"t\.jsonl:2: column 'duration_s' is negative"):
        read_trace(p)


@pytest.mark.parametrize("start_s", [1e300, 32_503_680_000.0, -5.0, 0.0])
def test_start_outside_1970_to_2262_names_line_and_column(tmp_path, start_s):
    p = _write(tmp_path / "t.jsonl", [_rec(), _rec(start_s=start_s)])
    with pytest.raises(TraceError, match=r"t\.jsonl:2: column 'start_s' is out of range"):
        read_trace(p)


def test_latest_start_the_store_holds_is_read(tmp_path):
    p = _write(tmp_path / "t.jsonl", [_rec(start_s=9_223_372_036.0)])  # 2262-04-11
    assert read_trace(p)["start_s"].to_list() == [9_223_372_036.0]


def test_parquet_start_out_of_range_and_infinite_duration_name_the_row(tmp_path):
    p = tmp_path / "t.parquet"
    pl.DataFrame([_rec(), _rec(start_s=1e300)]).write_parquet(p)
    with pytest.raises(TraceError, match=r"t\.parquet row 1: column 'start_s' is out of range"):
        read_trace(p)
    pl.DataFrame([_rec(), _rec(), _rec(duration_s=float("inf"))]).write_parquet(p)
    with pytest.raises(TraceError, match=r"t\.parquet row 2: column 'duration_s' is not finite"):
        read_trace(p)


def test_not_json_names_line(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(_rec()) + "\n{oops\n")
    with pytest.raises(TraceError, match=r"t\.jsonl:2: not a JSON object"):
        read_trace(p)


def test_recv_without_its_send_names_the_recv(tmp_path):
    recs = [
        _rec(rank=0, op="forward", microbatch=0),
        _rec(rank=0, op="send_forward", microbatch=0, start_s=1.5),
        _rec(rank=1, pp_stage=1, op="recv_forward", microbatch=0, start_s=1.5),
        _rec(rank=1, pp_stage=1, op="recv_forward", microbatch=1, start_s=2.0),
    ]
    p = _write(tmp_path / "t.jsonl", recs)
    with pytest.raises(
        TraceError, match=r"t\.jsonl:4: column 'op': recv_forward .*microbatch 1.* no matching send"
    ):
        read_trace(p)


def test_microbatch_required_with_pipeline_stages(tmp_path):
    recs = [_rec(rank=0, op="forward"), _rec(rank=1, pp_stage=1, op="data_load")]
    p = _write(tmp_path / "t.jsonl", recs)
    with pytest.raises(TraceError, match=r"t\.jsonl:1: column 'microbatch' is missing"):
        read_trace(p)


def test_parquet_errors_name_the_row(tmp_path):
    df = pl.DataFrame([_rec(), _rec(), _rec(op="bogus")])
    df.write_parquet(tmp_path / "t.parquet")
    with pytest.raises(TraceError, match=r"t\.parquet row 2: column 'op': unknown op 'bogus'"):
        read_trace(tmp_path / "t.parquet")
    df.drop("step").write_parquet(tmp_path / "u.parquet")
    with pytest.raises(TraceError, match=r"u\.parquet: missing column 'step'"):
        read_trace(tmp_path / "u.parquet")
    df.with_columns(pl.col("rank").cast(pl.String)).write_parquet(tmp_path / "v.parquet")
    with pytest.raises(TraceError, match=r"v\.parquet: column 'rank' has type String, expected an integer"):
        read_trace(tmp_path / "v.parquet")


def test_validate_a_frame_names_source_and_row():
    df = pl.DataFrame([_rec(), _rec(duration_s=-1.0)])
    with pytest.raises(TraceError, match=r"mine row 1: column 'duration_s' is negative"):
        validate_trace(df, "mine")


def test_empty_directory_and_missing_path(tmp_path):
    with pytest.raises(TraceError, match="no \\*.jsonl or \\*.parquet files"):
        read_trace(tmp_path)
    with pytest.raises(TraceError, match="no such file or directory"):
        read_trace(tmp_path / "nope")


def test_what_the_writer_writes_reads_back(tmp_path):
    with StepTraceWriter(
        tmp_path, "job7", rank=1, dp_rank=1, pp_stage=0, tp_rank=0, host="h1", local_rank=1
    ) as w:
        w.op(0, "data_load", 10.0, 0.1)
        with w.timed(0, "forward", microbatch=0):
            pass
        w.op(1, "optimizer", 11.0, 0.2)
    df = read_trace(tmp_path)
    assert df["op"].to_list() == ["data_load", "forward", "optimizer"]
    assert df["host"].unique().to_list() == ["h1"]


def test_the_documented_example_lines_read(tmp_path):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "step-trace.md").read_text()
    block = doc.split("```json\n", 1)[1].split("```", 1)[0]
    recs = [json.loads(line) for line in block.splitlines()]
    assert [r["op"] for r in recs] == ["recv_forward", "forward", "send_forward"]
    # a middle stage's excerpt: its peers' records are not in it, everything else is valid
    p = _write(tmp_path / "doc.jsonl", recs)
    with pytest.raises(TraceError, match=r"doc\.jsonl:1: column 'op': recv_forward .* no matching send"):
        read_trace(p)
    peers = [
        {**recs[0], "rank": 0, "pp_stage": 0, "op": "send_forward"},
        {**recs[2], "rank": 4, "pp_stage": 2, "op": "recv_forward"},
    ]
    assert read_trace(_write(tmp_path / "doc.jsonl", recs + peers)).height == 5
