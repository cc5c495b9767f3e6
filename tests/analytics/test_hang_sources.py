"""Hangs localized from NCCL RAS reports and Flight Recorder dumps (alone, and placed through a store)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import polars as pl
from test_flight_recorder import write_dumps

from c4.analytics.diagnose import diagnose
from c4.analytics.hang_sources import ras_findings
from c4.bench.conformance import read_artifact

T = datetime(2027, 1, 1)
RAS_CORPUS = Path(__file__).resolve().parents[1] / "conformance" / "nccl_ras"


def ras_rows_of(artifact: str) -> pl.DataFrame:
    """A real RAS report read by the nccl_ras sampler, typed as the collector stores it."""
    folder = RAS_CORPUS / artifact
    rows, skipped, _reasons, errors = read_artifact(
        folder, json.loads((folder / "expected.json").read_text())
    )
    assert not skipped and not errors
    return pl.DataFrame(rows["nccl_ras_status"])


def test_real_ras_json_report_blames_the_missing_rank_on_its_gpu():
    """NCCL's documented JSON report (2.29.1): rank 1 unresponsive -> a finding on host 172.16.64.245, GPU 1."""
    found = diagnose({"nccl_ras_status": ras_rows_of("docs-2.29.1-json")})
    assert [(f.detector, f.component, f.node) for f in found] == [
        ("ras_missing_rank", "172.16.64.245/gpu1", "172.16.64.245")
    ]


def test_real_ras_text_report_blames_the_missing_rank():
    """NCCL's documented text report (2.24/2.25): 'The missing rank: 21' -> a finding on rank 21."""
    found = ras_findings(ras_rows_of("docs-text-incomplete"))
    assert [(f.detector, f.evidence["comm"], f.evidence["rank"]) for f in found] == [
        ("ras_missing_rank", "0xcf264af53edbe986", 21)
    ]


def ras_frame(comm_rows, rank_rows):
    rows = [
        {
            "ts": T,
            "node": "h0",
            "comm_hash": "c1",
            "scope": "communicator",
            "rank": None,
            "status": "RUNNING",
            **r,
        }
        for r in comm_rows
    ] + [
        {"ts": T, "node": r["host"], "comm_hash": "c1", "scope": "rank", "status": "RUNNING", **r}
        for r in rank_rows
    ]
    return pl.DataFrame(
        rows,
        schema_overrides={"rank": pl.Int32, "gpu": pl.Int32, "coll_count": pl.UInt64},
        infer_schema_length=None,
    )


def test_ras_dead_and_missing_ranks_are_placed_on_their_gpu():
    ranks = [{"rank": r, "host": f"h{r // 8}", "gpu": r % 8, "coll_count": 100} for r in range(16)]
    ras = ras_frame([{"dead_ranks": "11", "missing_ranks": "11,3"}], ranks)
    got = {(f.detector, f.component, f.fault_class) for f in ras_findings(ras)}
    assert got == {
        ("ras_dead_rank", "h1/gpu3", "non_comm_hang"),
        ("ras_missing_rank", "h0/gpu3", "non_comm_hang"),
    }


def test_ras_rank_that_stopped_issuing_collectives_is_blamed():
    ranks = [
        {"rank": r, "host": f"h{r // 8}", "gpu": r % 8, "coll_count": 57 if r == 9 else 60} for r in range(16)
    ]
    found = diagnose({"nccl_ras_status": ras_frame([{"dead_ranks": "", "missing_ranks": ""}], ranks)})
    assert [(f.detector, f.component) for f in found] == [("ras_lagging_rank", "h1/gpu1")]
    healthy = [{**r, "coll_count": 60 + r["rank"] % 2} for r in ranks]  # a count in flight is not a hang
    assert ras_findings(ras_frame([{"dead_ranks": "", "missing_ranks": ""}], healthy)) == []


def test_flight_recorder_verdict_joins_the_store_diagnosis(tmp_path):
    import pyarrow as pa

    from c4.catalogue import load
    from c4.collector.store import PendingBatch, Store

    spec = load()["nccl_collectives"]
    rows = [
        {
            "ts": T,
            "node": f"h{r // 2}",
            "job": "",
            "comm_id": "c1",
            "rank": r,
            "kind": "coll",
            "coll_sn": 41,
            "hostname": f"h{r // 2}",
            "start_ts": T,
        }
        for r in range(4)
    ]
    store = Store(tmp_path / "c4.duckdb", load())
    store.commit([PendingBatch("", 0, spec, pa.Table.from_pylist(rows, schema=spec.arrow_schema))])
    store.close()
    dumps = write_dumps(tmp_path, "json")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "c4.cli",
            "diagnose",
            "--db",
            str(tmp_path / "c4.duckdb"),
            "--flight-recorder",
            str(dumps),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert [(f["fault_id"], f["class"]) for f in found] == [
        ("flight_recorder_missing_rank:h1/gpu2", "non_comm_hang")
    ]
    neither = subprocess.run(
        [sys.executable, "-m", "c4.cli", "diagnose"], capture_output=True, text=True, timeout=60
    )
    assert neither.returncode == 2 and "--db FILE" in neither.stderr
