"""Per-connection JSON-lines records: parsed exactly, malformed lines counted and skipped."""

import json

import pyarrow as pa

from c4.agent.nccl_conn import ConnRecordSampler, parse_record
from c4.catalogue import load

GOOD = {
    "v": 1,
    "ts_ns": 1764000000_000000000,
    "window_ns": 1_000_000_000,
    "pid": 4242,
    "comm": "0x9a3f",
    "rank": 3,
    "peer": 11,
    "channel": 2,
    "dir": "send",
    "dev": "mlx5_3",
    "port": 1,
    "ops": 12,
    "steps": 96,
    "bytes": 402653184,
    "net_us": 8210.5,
    "wait_peer_us": 310.0,
    "wait_gpu_us": 95,
}


def test_parse_record_maps_every_key():
    row = parse_record(json.dumps(GOOD))
    assert row["comm_hash"] == "0x9a3f" and row["peer_rank"] == 11 and row["nic_device"] == "mlx5_3"
    assert row["wait_gpu_us"] == 95.0 and row["window_s"] == 1.0
    assert abs(row["throughput_gbps"] - 402653184 * 8 / 8210.5e3) < 1e-9
    assert row["ts"].year == 2025
    schema = load()["nccl_connections"].arrow_schema
    pa.Table.from_pylist([{**row, "node": "n", "job": ""}], schema=schema)


def test_sampler_tails_files_and_skips_garbage(tmp_path, caplog):
    d = tmp_path / "rec"
    d.mkdir()
    bad_type = {**GOOD, "bytes": "many"}
    missing = {k: v for k, v in GOOD.items() if k != "peer"}
    bad_dir = {**GOOD, "dir": "sideways"}
    (d / "c4-conn-a-1.jsonl").write_text(
        "\n".join(
            [
                json.dumps(GOOD),
                "{not json",
                json.dumps(bad_type),
                json.dumps(missing),
                json.dumps(bad_dir),
                "[1,2]",
                "",
            ]
        )
        + "\n"
        + json.dumps({**GOOD, "rank": 4})[:30]  # a partial last line
    )
    s = ConnRecordSampler(d)
    s.probe()
    rows = s.sample(0)["nccl_connections"]
    assert [r["rank"] for r in rows] == [3]
    assert s.bad_lines == 5
    assert "key 'bytes' should be int" in caplog.text and "missing key 'peer'" in caplog.text
    with open(d / "c4-conn-a-1.jsonl", "a") as f:  # the partial line completes later
        f.write(json.dumps({**GOOD, "rank": 4})[30:] + "\n")
    (d / "c4-conn-b-2.jsonl").write_text(json.dumps({**GOOD, "rank": 5}) + "\n")
    assert sorted(r["rank"] for r in s.sample(0)["nccl_connections"]) == [4, 5]


def test_probe_needs_a_directory(tmp_path):
    import pytest

    from c4.agent.sampler import SourceUnavailable

    with pytest.raises(SourceUnavailable):
        ConnRecordSampler(None).probe()
    with pytest.raises(SourceUnavailable):
        ConnRecordSampler(tmp_path / "missing").probe()
