"""``c4 bench ingest``: rows/s through agents -> gRPC -> collector -> DuckDB vs. DuckDB's own Arrow append."""

from __future__ import annotations

import argparse

from c4.cli_numbers import at_least_one, real_number

HELP = (
    "Ingest throughput: M concurrent Push streams into a real collector vs. in-process DuckDB Arrow appends."
)


def row_total(text: str) -> float:
    """--rows: a whole number of rows, at least 1, written as 4000000 or 4e6 (argparse type)."""
    value = real_number(text)
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of rows, 1 or more")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Benchmark size."""
    parser.add_argument("--rows", type=row_total, default=4e6, help="total rows (default 4 million)")
    parser.add_argument(
        "--streams", type=at_least_one, default=8, help="concurrent agent streams (default 8)"
    )
    parser.add_argument(
        "--batch-rows", type=at_least_one, default=50_000, help="rows per batch (default 50,000)"
    )
    parser.add_argument(
        "--rounds", type=at_least_one, default=3, help="alternating e2e/ceiling rounds; medians reported"
    )
    parser.add_argument("--workdir", help="directory for the databases (default: a temp dir)")


def make_batches(total_rows: int, streams: int, batch_rows: int):
    """Per stream: a list of (seq, Arrow IPC payload) of narrow heartbeat rows."""
    from datetime import datetime, timedelta

    import pyarrow as pa

    from c4.arrow_ipc import encode_ipc
    from c4.catalogue import load

    spec = load()["agent_heartbeat"]
    per_stream = total_rows // streams
    t0 = datetime(2026, 1, 1)
    out = []
    for s in range(streams):
        node = f"bench-{s:03d}"
        batches = []
        for seq, start in enumerate(range(0, per_stream, batch_rows), start=1):
            n = min(batch_rows, per_stream - start)
            ticks = pa.array(range(start + 1, start + n + 1), pa.uint64())
            table = pa.table(
                {
                    "ts": pa.array([t0 + timedelta(milliseconds=start)] * n, pa.timestamp("us")),
                    "node": pa.array([node] * n),
                    "job": pa.array(["bench"] * n),
                    "agent_id": pa.array([node] * n),
                    "boot_ns": pa.array([1] * n, pa.int64()),
                    "tick": ticks,
                    "uptime_s": pa.array([0.5] * n, pa.float64()),
                },
                schema=spec.arrow_schema,
            )
            batches.append((seq, encode_ipc(table)))
        out.append((node, batches))
    return out


def run_e2e(address: str, streams_batches, progress) -> float:
    """Push every stream concurrently; returns seconds from first send to last ack."""
    import threading
    import time

    import grpc

    from c4.telemetry.v1 import telemetry_pb2 as pb
    from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

    errors: list[str] = []
    start = threading.Barrier(len(streams_batches) + 1)

    def one(node: str, batches) -> None:
        with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
            stub = pb_grpc.TelemetryStub(ch)
            stub.Hello(pb.HelloRequest(agent_id=node, hostname=node), timeout=30)
            reqs = [
                pb.Batch(agent_id=node, seq=seq, table="agent_heartbeat", schema_version=1, arrow_ipc=p)
                for seq, p in batches
            ]
            start.wait()
            for ack in stub.Push(iter(reqs), timeout=600):
                if ack.code != 0:
                    errors.append(ack.message)
                progress(1)

    threads = [threading.Thread(target=one, args=sb) for sb in streams_batches]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"collector refused batches: {errors[:3]}")
    return elapsed


def run_ceiling(db_path, streams_batches) -> tuple[float, float]:
    """Append the same rows straight into a fresh DuckDB file from Arrow, in process, two ways.

    Returns seconds for (one INSERT and commit per batch, one INSERT of all rows
    concatenated); the faster one is the ceiling.
    """
    import time

    import duckdb
    import pyarrow as pa

    from c4.arrow_ipc import decode_ipc
    from c4.catalogue import load

    spec = load()["agent_heartbeat"]
    tables = [decode_ipc(p) for _, batches in streams_batches for _, p in batches]
    cols = ", ".join(f'"{c}"' for c in spec.column_names)
    timings = []
    for mode in ("per_batch", "concatenated"):
        path = db_path.with_name(f"{db_path.stem}-{mode}.duckdb")
        con = duckdb.connect(str(path))
        con.execute(spec.ddl())
        t0 = time.perf_counter()
        for table in tables if mode == "per_batch" else [pa.concat_tables(tables)]:
            con.register("batch", table)
            con.execute(f"INSERT INTO agent_heartbeat ({cols}) SELECT {cols} FROM batch")
            con.unregister("batch")
        timings.append(time.perf_counter() - t0)
        con.close()
    return timings[0], timings[1]


def collector_stats(address: str) -> dict[str, int]:
    """The collector's own counters (Stats RPC)."""
    import grpc

    from c4.telemetry.v1 import telemetry_pb2 as pb
    from c4.telemetry.v1 import telemetry_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as ch:
        return dict(pb_grpc.TelemetryStub(ch).Stats(pb.StatsRequest(), timeout=10).counters)


def run(args: argparse.Namespace) -> int:
    """Alternate end-to-end and in-process rounds, then print medians and the ratio."""
    import shutil
    import statistics
    import sys
    import tempfile
    from pathlib import Path

    from tqdm import tqdm

    from c4.query import query_arrow
    from c4.report import emit
    from c4.sim.procs import start_collector

    total = int(args.rows)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="c4-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    streams_batches = make_batches(total, args.streams, args.batch_rows)
    n_batches = sum(len(b) for _, b in streams_batches)
    rows = (total // args.streams) * args.streams
    e2e, per_batch, concatenated = [], [], []
    collector = start_collector(work / "e2e")
    try:
        # warm up connections, thread pools and the file (rows under other agent ids, not timed)
        warm = [(f"warm-{node}", batches[:2]) for node, batches in streams_batches]
        run_e2e(collector.address, warm, lambda n: None)
        expected = sum(len(b) for _, b in warm) * args.batch_rows
        with tqdm(total=n_batches * args.rounds, desc="batches", disable=not sys.stdout.isatty()) as bar:
            for r in range(args.rounds):
                # each round is a fresh set of agents, so nothing is deduplicated away
                round_batches = [(f"{node}-r{r}", batches) for node, batches in streams_batches]
                e2e.append(run_e2e(collector.address, round_batches, bar.update))
                expected += rows
                pb_s, cat_s = run_ceiling(work / f"ceiling-r{r}.duckdb", streams_batches)
                per_batch.append(pb_s)
                concatenated.append(cat_s)
        stored = (
            query_arrow(collector.address, "SELECT count(*) FROM agent_heartbeat")[0].column(0)[0].as_py()
        )
        transactions = collector_stats(collector.address).get("commit_transactions", 0)
    finally:
        collector.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if stored != expected:
        print(f"c4 bench ingest: stored {stored} rows, expected {expected}", file=sys.stderr)
        return 1
    e2e_s, per_batch_s, concatenated_s = (statistics.median(x) for x in (e2e, per_batch, concatenated))
    ceiling_s = min(per_batch_s, concatenated_s)  # the ceiling is the faster in-process way
    e2e_rps, ceiling_rps = rows / e2e_s, rows / ceiling_s
    table = [
        {
            "path": "agents -> gRPC -> collector -> DuckDB",
            "rows": rows,
            "median_s": e2e_s,
            "rows_per_s": e2e_rps,
        },
        {
            "path": "in-process DuckDB Arrow append, one per batch",
            "rows": rows,
            "median_s": per_batch_s,
            "rows_per_s": rows / per_batch_s,
        },
        {
            "path": "in-process DuckDB Arrow append, all rows at once",
            "rows": rows,
            "median_s": concatenated_s,
            "rows_per_s": rows / concatenated_s,
        },
    ]
    summary = {
        "e2e_rows_per_s": round(e2e_rps),
        "ceiling_rows_per_s": round(ceiling_rps),
        "ratio": round(e2e_rps / ceiling_rps, 3),
        "streams": args.streams,
        "rows": rows,
        "batch_rows": args.batch_rows,
        "rounds": args.rounds,
        "commit_transactions": transactions,
    }
    emit(
        f"c4 bench ingest: {rows:,} narrow rows, {args.streams} streams, {args.batch_rows:,} rows/batch, "
        f"median of {args.rounds} alternating rounds",
        table,
        summary,
        args.json,
    )
    return 0
