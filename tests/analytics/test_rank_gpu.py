"""Detectors name a rank's GPU from the rank_identity view, and say so when they can only guess it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta

import polars as pl
import pyarrow as pa
from test_flight_recorder import write_dumps
from test_hang_sources import ras_frame

from c4.analytics.collective import straggler_findings
from c4.analytics.hang_sources import ras_findings
from c4.analytics.rank_gpu import RankPlaces
from c4.catalogue import load
from c4.collector.store import PendingBatch, Store

T = datetime(2027, 1, 1)


def identity(rows: list[tuple]) -> pl.DataFrame:
    """A rank_identity frame: (comm_id, rank, n_ranks, node, gpu_index, gpu_from) per row."""
    return pl.DataFrame(
        rows,
        schema={
            "comm_id": pl.String,
            "rank": pl.Int32,
            "n_ranks": pl.Int32,
            "node": pl.String,
            "gpu_index": pl.Int32,
            "gpu_from": pl.String,
        },
        orient="row",
    )


def gpu_samples(nodes: dict[str, int]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"ts": T, "node": n, "gpu_index": i} for n, count in nodes.items() for i in range(count)]
    )


def test_identity_names_the_gpu_and_a_guess_says_it_is_one():
    places = RankPlaces(
        identity([("c", 0, 4, "vm-host40", 1, "bus_id"), ("c", 1, 4, "vm-host40", None, None)]),
        gpu_samples({"vm-host40": 2, "vm-host38": 2}),
    )
    assert (places.of("c", 0, "vm-host40").component, places.of("c", 0, "x").gpu_from) == (
        "vm-host40/gpu1",
        "bus_id",
    )
    unknown_gpu = places.of("c", 1, "vm-host40")
    assert unknown_gpu.component == "vm-host40/gpu1" and unknown_gpu.gpu_from.startswith("rank % 2 (")
    guessed = places.of("c", 10, "vm-host38")  # 10 % 2 GPUs on that host, not 10 % 8
    assert guessed.component == "vm-host38/gpu0"
    assert guessed.evidence == {"gpu_from": "rank % 2 (no identity of this rank known)"}
    assert places.of("c", 10, "other").gpu_from.startswith("rank % 8 (")
    assert places.of("c", 1, "vm-host40", hint=(0, "nccl_ras")).component == "vm-host40/gpu0"
    assert places.of("c", 7, None) is None


def test_global_ranks_are_the_largest_communicators():
    places = RankPlaces(identity([("tp", 1, 2, "h0", 3, "bus_id"), ("world", 1, 16, "h0", 5, "bus_id")]))
    assert places.of_global(1, None).component == "h0/gpu5"
    assert places.of_global(9, "h1").component == "h1/gpu1" and places.of_global(9, None) is None


def colls_with_straggler(comm: str, late_rank: int, ranks: int = 16) -> pl.DataFrame:
    rows = []
    for seq in range(10):
        for r in range(ranks):
            start = T + timedelta(seconds=seq) + timedelta(milliseconds=300 if r == late_rank else r % 3)
            rows.append(
                {
                    "ts": start + timedelta(seconds=0.5),
                    "comm_id": comm,
                    "rank": r,
                    "kind": "coll",
                    "coll_sn": seq,
                    "hostname": f"h{r // 8}",
                    "start_ts": start,
                }
            )
    return pl.DataFrame(rows)


def test_straggler_is_placed_on_the_gpu_its_rank_runs_on():
    """Data-parallel sub-communicator: its rank 5 is global rank 13, on h1's GPU 2 (not gpu5)."""
    colls = colls_with_straggler("dp1", 5, ranks=8).with_columns(pl.lit("h1").alias("hostname"))
    places = RankPlaces(identity([("dp1", 5, 8, "h1", 2, "bus_id")]))
    (f,) = straggler_findings(colls, places=places)
    assert (f.component, f.evidence["gpu_from"], f.evidence["rank"]) == ("h1/gpu2", "bus_id", 5)
    (guess,) = straggler_findings(colls)
    assert guess.component == "h1/gpu5" and guess.evidence["gpu_from"].startswith("rank % 8 (no identity")


def test_ras_rank_is_placed_by_identity_before_what_ras_says():
    ranks = [{"rank": r, "host": f"h{r // 8}", "gpu": r % 8, "coll_count": 100} for r in range(16)]
    ras = ras_frame([{"dead_ranks": "11", "missing_ranks": "11"}], ranks)
    (f,) = ras_findings(ras, places=RankPlaces(identity([("c1", 11, 16, "h1", 6, "bus_id")])))
    assert (f.component, f.evidence["gpu_from"]) == ("h1/gpu6", "bus_id")
    (hinted,) = ras_findings(ras)
    assert (hinted.component, hinted.evidence["gpu_from"]) == ("h1/gpu3", "nccl_ras")


def test_flight_recorder_rank_is_placed_through_the_store_identity(tmp_path):
    """`c4 diagnose --db --flight-recorder`: rank 2 logged its init line from h1's GPU at bus 0000:9a:00.0."""
    cat = load()
    colls = [
        {
            "ts": T,
            "node": f"h{r // 2}",
            "job": "",
            "comm_id": "c1",
            "rank": r,
            "n_ranks": 4,
            "kind": "coll",
            "coll_sn": 41,
            "hostname": f"h{r // 2}",
            "start_ts": T,
        }
        for r in range(4)
    ]
    init = [
        {
            "ts": T,
            "node": "h1",
            "job": "",
            "comm_id": "c1",
            "rank": 2,
            "n_ranks": 4,
            "kind": "init",
            "bus_id": "9a000",
            "cuda_dev": 0,
            "hostname": "h1",
            "pid": 77,
        }
    ]
    gpus = [
        {"ts": T, "node": "h1", "job": "", "gpu_index": i, "pci_bus_id": f"0000:{b:02x}:00.0"}
        for i, b in enumerate((0x18, 0x2A, 0x3A, 0x5D, 0x9A))
    ]
    store = Store(tmp_path / "c4.duckdb", cat)
    store.commit(
        [
            PendingBatch("", i, cat[t], pa.Table.from_pylist(rows, schema=cat[t].arrow_schema))
            for i, (t, rows) in enumerate(
                (("nccl_collectives", colls), ("nccl_topology", init), ("gpu_samples", gpus))
            )
        ]
    )
    store.close()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "c4.cli",
            "diagnose",
            "--db",
            str(tmp_path / "c4.duckdb"),
            "--flight-recorder",
            str(write_dumps(tmp_path, "json")),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    (f,) = [f for f in json.loads(out.stdout) if f["fault_id"].startswith("flight_recorder")]
    assert f["component"] == "h1/gpu4" and f["evidence"]["gpu_from"] == "bus_id"
