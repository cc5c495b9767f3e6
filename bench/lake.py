"""``c4 bench lake``: DuckLake commits per second per shard against a local PostgreSQL catalog.

Each shard is a process of its own holding a ``LakeStore`` (what a lake collector's writer thread
commits through), committing one group of agent_heartbeat rows per lake transaction as fast as it
can. Side by side in one run: 1 shard alone, then N shards committing at once on the same lake.
Reported per setup: commits/s per shard and in all, commit latency p50/p99, and the CPU PostgreSQL
spent (its server processes' user+system time over the wall time, in cores): the catalog's share of
what a lake commit costs, which is what limits how many shards one PostgreSQL serves. Then one pass
of the leader's file upkeep over what the setups wrote (``c4.collector.lake_upkeep``): the lake's data
files, snapshots and Parquet files on disk before and after, every committed row still there.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "DuckLake commits/s per shard on a local PostgreSQL catalog: 1 shard vs N shards at once, p50/p99, PG CPU."


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``c4 bench lake``."""
    parser.add_argument("--shards", type=int, default=4, help="shards committing at once (default 4)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="how long each setup commits (default 10)"
    )
    parser.add_argument(
        "--batch-rows", type=int, default=1000, help="agent_heartbeat rows per commit (default 1000)"
    )
    parser.add_argument("--workdir", help="keep the lake's files here (default: a temporary directory)")
    parser.add_argument(
        "--no-upkeep",
        dest="upkeep",
        action="store_false",
        help="skip the leader's file upkeep pass measured after the setups (files and snapshots before/after)",
    )
    parser.add_argument(
        "--compare-upkeep-child",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="after the upkeep pass, ROUNDS quiet passes alternately in a child process (as the collector runs "
        "them) and in this process: what the child's start and attach cost (default 0: skipped)",
    )
    parser.add_argument(
        "--compare-flush",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="then ROUNDS times: a few rows inlined into agent_heartbeat, flushed alternately per table that holds "
        "inlined rows (the upkeep's way) and by DuckLake's call over the whole lake (default 0: skipped)",
    )


def _clock_ticks_s() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def postgres_cpu_s(postmaster_pid: int) -> float:
    """User+system CPU seconds of the PostgreSQL server: the postmaster and every process it started
    (finished children's time is in the postmaster's cutime/cstime)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster_pid:
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        elif ppid == postmaster_pid:
            total += int(fields[11]) + int(fields[12])
    return total / _clock_ticks_s()


def _shard_worker(url, data_path, shard, seconds, batch_rows, barrier, results) -> None:
    """One shard: open the lake, wait for the others, commit for ``seconds``; put the commit latencies."""
    import time

    import pyarrow as pa

    from c4.catalogue import load
    from c4.collector.lake import LakeStore
    from c4.collector.store import PendingBatch

    catalogue = load()
    spec = catalogue["agent_heartbeat"]
    store = LakeStore(url, data_path, catalogue, shard)
    try:
        now = pa.scalar(time.time_ns() // 1000, pa.timestamp("us"))
        base = {c: [None] * batch_rows for c in spec.column_names}
        base.update(node=[f"{shard}-n{i % 125}" for i in range(batch_rows)], ts=[now.as_py()] * batch_rows)
        latencies_s: list[float] = []
        barrier.wait()
        end = time.monotonic() + seconds
        seq = 0
        while time.monotonic() < end:
            seq += 1
            cols = {**base, "agent_id": [f"{shard}-agent"] * batch_rows, "tick": list(range(batch_rows))}
            batch = PendingBatch(
                f"{shard}-agent", seq, spec, pa.Table.from_pydict(cols, schema=spec.arrow_schema)
            )
            started = time.perf_counter()
            result = store.commit([batch])[0]
            latencies_s.append(time.perf_counter() - started)
            if result.error:
                raise RuntimeError(f"shard {shard}: commit failed: {result.error}")
        results.put((shard, latencies_s))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the bench
        results.put((shard, f"{type(exc).__name__}: {exc}"))
        barrier.abort()
    finally:
        store.close()


def stored_rows(url: str, data_path: str, agent_like: str) -> int:
    """agent_heartbeat rows in the lake from agents whose id is LIKE ``agent_like``."""
    import duckdb

    from c4.collector.lake import attach_lake

    con = duckdb.connect()
    try:
        attach_lake(con, url, data_path, read_only=True)
        return con.execute(
            "SELECT count(*) FROM agent_heartbeat WHERE agent_id LIKE ?", [agent_like]
        ).fetchone()[0]
    finally:
        con.close()


def quiet_passes(store, snapshot_keep_s: float, file_keep_s: float, rounds: int) -> dict:
    """Wall seconds of upkeep passes over a lake with nothing left to do, alternately in a child process
    (what the collector runs) and on a cursor of this process: what the child's start and attach cost."""
    import time

    from c4.collector.lake import LAKE
    from c4.collector.lake_upkeep import upkeep

    child_s, inprocess_s = [], []
    for _ in range(rounds):
        t0 = time.monotonic()
        store.upkeep(snapshot_keep_s, file_keep_s)
        child_s.append(time.monotonic() - t0)
        cur = store.cursor()
        t0 = time.monotonic()
        try:
            upkeep(cur, LAKE, snapshot_keep_s, file_keep_s)
        finally:
            cur.close()
        inprocess_s.append(time.monotonic() - t0)
    child, inprocess = _percentile(sorted(child_s), 0.5), _percentile(sorted(inprocess_s), 0.5)
    return {
        "quiet_pass_child_s": round(child, 2),
        "quiet_pass_inprocess_s": round(inprocess, 2),
        "quiet_pass_child_ratio": round(child / inprocess, 3) if inprocess else None,
    }


def flush_rounds(store, rounds: int) -> dict:
    """Seconds of flushing a few inlined rows, per table that holds any (``flush_statements``, the check
    included) against DuckLake's call over the whole lake; alternating which goes first, each after the same
    three small commits."""
    import time

    import pyarrow as pa

    from c4.collector.lake import LAKE
    from c4.collector.lake_upkeep import flush_statements, whole_lake_flush
    from c4.collector.store import PendingBatch

    spec = store.catalogue["agent_heartbeat"]
    seq = [0]

    def inline_some() -> None:
        for _ in range(3):
            seq[0] += 1
            cols = {c: [None] * 3 for c in spec.column_names}
            cols.update(node=["flush"] * 3, agent_id=["flush"] * 3, tick=[seq[0]] * 3)
            table = pa.Table.from_pydict(cols, schema=spec.arrow_schema)
            if store.commit([PendingBatch("flush", seq[0], spec, table)])[0].error:
                raise RuntimeError("compare-flush: a commit failed")

    def per_table(cur) -> int:
        return sum(
            int(r[0] or 0) for _, sql in flush_statements(cur, LAKE) for r in cur.execute(sql).fetchall()
        )

    def whole(cur) -> int:
        return sum(int(r[0] or 0) for r in cur.execute(whole_lake_flush(LAKE)).fetchall())

    times: dict[str, list[float]] = {"per_table": [], "whole_lake": []}
    for i in range(rounds):
        order = [("per_table", per_table), ("whole_lake", whole)]
        for name, flush in order if i % 2 == 0 else order[::-1]:
            inline_some()
            cur = store.cursor()
            try:
                t0 = time.monotonic()
                flushed = flush(cur)
                times[name].append(time.monotonic() - t0)
            finally:
                cur.close()
            if flushed != 9 + 3:  # the heartbeats and the shard's sequence rows
                raise RuntimeError(f"compare-flush: {name} flushed {flushed} rows, 12 were inlined")
    per, lake = (_percentile(sorted(times[k]), 0.5) for k in ("per_table", "whole_lake"))
    return {
        "flush_per_table_s": round(per, 3),
        "flush_whole_lake_s": round(lake, 3),
        "flush_speedup": round(lake / per, 1) if per else None,
    }


def measure_upkeep(
    url: str,
    data_path: str,
    snapshot_keep_s: float,
    file_keep_s: float,
    compare_rounds: int = 0,
    flush_rounds_n: int = 0,
) -> dict:
    """One pass of the leader's file upkeep over the lake the setups left: files and snapshots before and
    after, and Parquet files on disk (``c4.collector.lake_upkeep``); with ``compare_rounds``, quiet passes
    in a child and in process side by side after it (``quiet_passes``)."""
    import time

    from c4.catalogue import load
    from c4.collector.lake import LakeStore

    def on_disk() -> int:
        return sum(1 for _ in Path(data_path).rglob("*.parquet"))

    store = LakeStore(url, data_path, load(), "upkeep")
    try:
        disk_before = on_disk()
        t0 = time.monotonic()
        result = store.upkeep(snapshot_keep_s, file_keep_s)
        wall_s = time.monotonic() - t0
        cur = store.cursor()
        rows = cur.execute("SELECT count(*) FROM agent_heartbeat").fetchone()[0]
        cur.close()
        quiet = quiet_passes(store, snapshot_keep_s, file_keep_s, compare_rounds) if compare_rounds else {}
        if flush_rounds_n:
            quiet.update(flush_rounds(store, flush_rounds_n))
            cur = store.cursor()
            rows = cur.execute("SELECT count(*) FROM agent_heartbeat WHERE agent_id <> 'flush'").fetchone()[0]
            cur.close()
    finally:
        store.close()
    return {
        **quiet,
        "upkeep_wall_s": wall_s,
        "setup": "leader's file upkeep, after both",
        "files_before": result.files_before,
        "files_after": result.files_after,
        "snapshots_before": result.snapshots_before,
        "snapshots_after": result.snapshots_after,
        "parquet_on_disk_before": disk_before,
        "parquet_on_disk_after": on_disk(),
        "inlined_rows_flushed": result.inlined_rows_flushed,
        "conflicts": len(result.conflicts),
        "upkeep_s": result.seconds,
        "upkeep_step_s": {name: round(v, 3) for name, v in result.step_s.items()},
        "rows_after": rows,
    }


def _percentile(sorted_s: list[float], q: float) -> float:
    return sorted_s[min(len(sorted_s) - 1, int(q * len(sorted_s)))]


def run_setup(pg, data_path: str, shards: int, seconds: float, batch_rows: int, tag: str) -> dict:
    """``shards`` processes committing into one lake at once; their figures and PostgreSQL's CPU."""
    import multiprocessing
    import time

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(shards + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_shard_worker,
            args=(pg.url, data_path, f"{tag}{i}", seconds, batch_rows, barrier, results),
        )
        for i in range(shards)
    ]
    for p in procs:
        p.start()
    barrier.wait(timeout=300)  # every shard attached: the timed part starts
    cpu0, wall0 = postgres_cpu_s(pg.postmaster_pid()), time.monotonic()
    got = [results.get(timeout=seconds + 300) for _ in procs]
    wall_s = time.monotonic() - wall0
    cpu_s = postgres_cpu_s(pg.postmaster_pid()) - cpu0
    for p in procs:
        p.join(60)
    errors = [v for _, v in got if isinstance(v, str)]
    if errors:
        raise RuntimeError("; ".join(errors))
    latencies = sorted(x for _, v in got for x in v)
    commits = len(latencies)
    stored = stored_rows(pg.url, data_path, f"{tag}%")
    if stored != commits * batch_rows:
        raise RuntimeError(f"{shards} shard(s): {stored} rows in the lake, {commits * batch_rows} committed")
    return {
        "setup": f"{shards} shard{'s' if shards > 1 else ''} at once",
        "shards": shards,
        "commits": commits,
        "commits_per_s": commits / seconds,
        "commits_per_s_per_shard": commits / seconds / shards,
        "rows_per_s": commits * batch_rows / seconds,
        "p50_ms": 1000 * _percentile(latencies, 0.50),
        "p99_ms": 1000 * _percentile(latencies, 0.99),
        "pg_cpu_cores": cpu_s / wall_s,
        "pg_cpu_ms_per_commit": 1000 * cpu_s / max(1, commits),
    }


def run(args: argparse.Namespace) -> int:
    """1 shard, then N shards at once, on one lake in a throwaway PostgreSQL."""
    import shutil
    import sys
    import tempfile

    from c4.report import emit
    from c4.sim.postgres import LocalPostgres

    if (
        args.shards < 1
        or args.seconds <= 0
        or args.batch_rows < 1
        or args.compare_upkeep_child < 0
        or args.compare_flush < 0
    ):
        print(
            "c4 bench lake: --shards and --batch-rows must be >= 1, --seconds > 0, --compare-upkeep-child and "
            "--compare-flush >= 0",
            file=sys.stderr,
        )
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="c4-bench-lake-"))
    work.mkdir(parents=True, exist_ok=True)
    pg = LocalPostgres().start()
    try:
        rows = [
            run_setup(pg, str(work / "data"), 1, args.seconds, args.batch_rows, "solo"),
            run_setup(pg, str(work / "data"), args.shards, args.seconds, args.batch_rows, "many"),
        ]
        # the setups' commits are the only data: what the upkeep keeps must be all of it
        upkeep = (
            measure_upkeep(
                pg.url, str(work / "data"), 0.001, 0.001, args.compare_upkeep_child, args.compare_flush
            )
            if args.upkeep
            else None
        )
    finally:
        pg.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    one, many = rows
    summary = {
        "shards": args.shards,
        "batch_rows": args.batch_rows,
        "seconds": args.seconds,
        "cpus": os.cpu_count(),
        "one_shard_commits_per_s": round(one["commits_per_s"], 1),
        "n_shards_commits_per_s": round(many["commits_per_s"], 1),
        "per_shard_ratio": round(many["commits_per_s_per_shard"] / one["commits_per_s_per_shard"], 3),
        "one_shard_p99_ms": round(one["p99_ms"], 1),
        "n_shards_p99_ms": round(many["p99_ms"], 1),
        "pg_cpu_ms_per_commit": round(many["pg_cpu_ms_per_commit"], 2),
    }
    if upkeep is not None:
        committed = (one["commits"] + many["commits"]) * args.batch_rows
        if upkeep["rows_after"] != committed:
            raise RuntimeError(
                f"upkeep: {upkeep['rows_after']} rows in the lake after it, {committed} committed"
            )
        summary.update(
            upkeep_files_before=upkeep["files_before"],
            upkeep_files_after=upkeep["files_after"],
            upkeep_snapshots_before=upkeep["snapshots_before"],
            upkeep_snapshots_after=upkeep["snapshots_after"],
            upkeep_parquet_on_disk_before=upkeep["parquet_on_disk_before"],
            upkeep_parquet_on_disk_after=upkeep["parquet_on_disk_after"],
            upkeep_s=round(upkeep["upkeep_s"], 2),
            upkeep_wall_s=round(upkeep["upkeep_wall_s"], 2),
            upkeep_step_s=upkeep["upkeep_step_s"],  # where the pass went, step by step
            **{k: v for k, v in upkeep.items() if k.startswith(("quiet_pass_", "flush_"))},
        )
    emit(
        f"c4 bench lake: DuckLake commits of {args.batch_rows:,} agent_heartbeat rows, catalog in a local "
        f"PostgreSQL, {args.seconds:g} s per setup, same run (per_shard_ratio: N shards' per-shard rate / "
        "one shard's)",
        rows,
        summary,
        args.json,
    )
    return 0
