"""``c4 bench ui``: the queries behind each dashboard page, timed through a real collector's Query RPC."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from c4.cli_numbers import at_least_one

HELP = (
    "Dashboard: time every page's queries through the Query RPC on a 256-node x 8-GPU 1-hour store, and on a "
    "1,024-node store with 7 days of rollups and the last hour raw."
)

#: The per-page target: every page's queries together complete within this many seconds.
TARGET_S = 1.0
#: Look-back window the windowed pages are timed with: the pages' default view (15 min); --window-s changes it,
#: and the widest setting that still fits the 1-hour store (1 h) is timed too and reported beside it.
WINDOW_S = 900.0
WIDE_WINDOW_S = 3600.0

#: The week-long case: this many nodes, hourly rollups over this many days, minute rollups over the last
#: ``WEEK_MINUTE_DAYS`` (what a window up to 2 days reads), raw samples for the last ``WEEK_RAW_MINUTES``.
WEEK_NODES = 1024
WEEK_DAYS = 7.0
WEEK_MINUTE_DAYS = 2.0
WEEK_RAW_MINUTES = 60.0
#: Raw minutes the collector's rollup compute is timed on when the week-long store is built.
WEEK_TIMED_MINUTES = 5.0
#: Windows the week-long case times: the whole week (hourly rollups) and one day (minute rollups).
WEEK_WINDOWS_S = {"7d": 7 * 86400.0, "1d": 86400.0}

Run = Callable[[str], list[dict]]


def configure(parser: argparse.ArgumentParser) -> None:
    """bench ui flags."""
    parser.add_argument("--nodes", type=at_least_one, default=256, help="nodes (8 GPUs and 8 NIC ports each)")
    parser.add_argument("--minutes", type=float, default=60.0, help="minutes of 1 Hz samples")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per page (median reported)")
    parser.add_argument(
        "--window-s",
        type=float,
        default=WINDOW_S,
        help="look-back window (default: the pages' default, 15 min)",
    )
    parser.add_argument(
        "--workdir", default="var/bench-ui", help="where the store is built (reused when its size matches)"
    )
    parser.add_argument(
        "--week-nodes",
        type=int,
        default=WEEK_NODES,
        help="nodes of the week-long case over rollups (0: skip it)",
    )
    parser.add_argument(
        "--week-days", type=float, default=WEEK_DAYS, help="days of rollups in the week-long case"
    )
    parser.add_argument(
        "--week-raw-minutes",
        type=float,
        default=WEEK_RAW_MINUTES,
        help="minutes of raw samples at the end of the week-long case",
    )


def resolution(run: Run, table: str) -> str:
    """What the pages read for ``table`` over ``WINDOW_S``, chosen as ``c4.ui.data.resolution`` chooses it."""
    from c4.ui.sql import pick_resolution, resolution_for, rollups_present

    if resolution_for(WINDOW_S) == "raw":
        return "raw"
    return pick_resolution(WINDOW_S, run(rollups_present(table))[0])


def overview(run: Run) -> None:
    """Overview page."""
    from c4.ui.queries import overview as q

    for sql in (q.inventory_counts(), q.health_grid(), q.faults_by_class()):
        run(sql)
    coll = resolution(run, "nccl_collectives")
    run(q.utilization_series(WINDOW_S, resolution(run, "gpu_samples")))
    run(q.busbw_series(WINDOW_S, coll))
    run(q.jobs(WINDOW_S, coll))


def faults(run: Run) -> None:
    """Faults page with its first fault selected (evidence, timeline, actions, history)."""
    from c4.ui.queries import collectives as qc
    from c4.ui.queries import faults as q

    listed = run(q.fault_list(("open", "acknowledged")))
    if not listed:
        return
    row = run(q.fault_detail(listed[0]["fault_id"]))[0]
    run(q.timeline(row["node"], row["first_seen"], row["last_seen"]))
    run(q.fault_actions(row["fault_id"]))
    run(q.fault_history(row["fault_id"]))
    where = q.parse_component(row["component"])
    if "gpu" in where:
        run(q.gpu_evidence(where["node"], where["gpu"], row["first_seen"], row["last_seen"]))
    elif "device" in where:
        run(
            q.port_evidence(
                where["node"], where["device"], where["port"], row["first_seen"], row["last_seen"]
            )
        )
        for comm in run(
            q.connections_through(where["node"], where["device"], row["first_seen"], row["last_seen"])
        )[:2]:
            run(qc.connection_matrix(comm["comm_hash"], 120, by_node=True))
    if row["evidence_sql"]:
        run(row["evidence_sql"])


def goodput(run: Run) -> None:
    """Goodput page for all jobs (ETTR, lost GPU-hours by cause, worst faults, recovery distribution)."""
    from c4.ui.queries import goodput as q

    if not run(q.jobs()):
        return
    for sql in (
        q.totals(WINDOW_S),
        q.ettr_series(WINDOW_S),
        q.lost_by_category(WINDOW_S),
        q.lost_by_cause(WINDOW_S),
        q.worst_faults(WINDOW_S),
        q.recovery_counts(WINDOW_S),
        q.recovery_times(WINDOW_S),
    ):
        run(sql)


def bandwidth(run: Run) -> None:
    """Bandwidth page (the worst port's series included)."""
    from c4.ui.queries import bandwidth as q

    run(q.port_faults())
    res = resolution(run, "ib_port_samples")
    ports = run(q.port_table(WINDOW_S, res))
    run(q.cluster_series(WINDOW_S, res))
    if ports:
        worst = min(ports, key=lambda r: (r["rate_ratio"] or 0, r["tx_util"] or 0))
        run(q.port_series(WINDOW_S, worst["node"], worst["device"], worst["port"], res))
    run(q.rank_busbw(WINDOW_S, resolution(run, "nccl_collectives")))


def collectives(run: Run) -> None:
    """Collectives page for the largest communicator."""
    from c4.ui.queries import collectives as q

    comms = run(q.communicators(WINDOW_S, resolution(run, "nccl_collectives")))
    if not comms:
        return
    comm = comms[0]
    run(q.rank_iterations(comm["comm_id"], WINDOW_S, 40, q.rank_group(comm["ranks"]), comm["last_seq"]))
    run(q.connection_matrix(comm["comm_id"], 120, by_node=comm["ranks"] > 64))


def traffic(run: Run) -> None:
    """Traffic page for the newest plan."""
    from c4.ui.queries import traffic as q

    plans = run(q.plans())
    if not plans:
        return
    pid, job = plans[0]["plan_id"], plans[0]["job"]
    for sql in (
        q.routing_summary(pid),
        q.history(job),
        q.degraded_links(pid),
        q.ecmp_overloads(pid),
        q.fabric(pid),
        q.link_loads(pid),
        q.connections(pid),
    ):
        run(sql)


def sql_console(run: Run) -> None:
    """SQL page with its first example."""
    from c4.ui.queries.console import FIRST_EXAMPLE

    run(FIRST_EXAMPLE)


PAGES: dict[str, Callable[[Run], None]] = {
    "overview": overview,
    "faults": faults,
    "goodput": goodput,
    "bandwidth": bandwidth,
    "collectives": collectives,
    "traffic": traffic,
    "sql": sql_console,
}


def time_pages(address: str, repeat: int) -> list[dict]:
    """Run every page's queries ``repeat`` times (after one cold run); one result row per page."""
    from c4.query import open_channel, query_arrow

    channel = open_channel(address)
    counts = {"queries": 0, "rows": 0}

    def run(sql: str) -> list[dict]:
        table, _ = query_arrow(channel, sql, max_rows=200_000, timeout_s=60)
        counts["queries"] += 1
        counts["rows"] += table.num_rows
        return table.to_pylist()

    out = []
    try:
        t0 = time.perf_counter()
        run("SELECT 1 AS one")
        floor_s = time.perf_counter() - t0
        for name, page in PAGES.items():
            counts.update(queries=0, rows=0)
            t0 = time.perf_counter()
            page(run)
            cold = time.perf_counter() - t0
            queries, rows = counts["queries"], counts["rows"]
            warm = []
            for _ in range(max(1, repeat)):
                t0 = time.perf_counter()
                page(run)
                warm.append(time.perf_counter() - t0)
            out.append(
                {
                    "page": name,
                    "queries": queries,
                    "rows": rows,
                    "cold_s": cold,
                    "median_s": statistics.median(warm),
                    "per_query_ms": statistics.median(warm) / max(1, queries) * 1e3,
                    "rpc_floor_ms": floor_s * 1e3,
                }
            )
    finally:
        channel.close()
    return out


def ensure_store(workdir: Path, nodes: int, minutes: float) -> tuple[Path, dict, float]:
    """Build the synthetic store unless one of the same size is already there; returns (db, rows, build seconds)."""
    import shutil

    from tqdm import tqdm

    from c4.bench.ui_store import Builder

    db = workdir / "c4.duckdb"
    marker = workdir / "store.json"
    want = {"nodes": nodes, "minutes": minutes, "version": 3}  # 2: with job_accounting, 3: plan_runs
    if db.exists() and marker.exists():
        meta = json.loads(marker.read_text())
        if meta.get("size") == want:
            return db, meta["rows"], 0.0
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    builder = Builder(db, nodes, minutes)
    t0 = time.perf_counter()
    with tqdm(total=builder.seconds, unit="s", desc="building store", disable=None) as bar:
        rows = builder.build(progress=bar.update)
    built_s = time.perf_counter() - t0
    marker.write_text(json.dumps({"size": want, "rows": rows}))
    return db, rows, built_s


def ensure_week_store(
    workdir: Path, nodes: int, days: float, raw_minutes: float
) -> tuple[Path, dict, float, dict]:
    """The week-long store: raw samples for the last hour, rolled by the collector's own code, and rollups
    before that written straight with SQL. Returns (db, rows, build seconds, the raw hour's rollup figures)."""
    import shutil

    from c4.bench.ui_store import Builder, add_rollups, time_rollup

    db = workdir / "c4.duckdb"
    marker = workdir / "store.json"
    want = {"nodes": nodes, "days": days, "raw_minutes": raw_minutes, "version": 3}  # 3: NCCL rollups
    if db.exists() and marker.exists():
        meta = json.loads(marker.read_text())
        if meta.get("size") == want:
            return db, meta["rows"], 0.0, meta["rollup"]
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    t0 = time.perf_counter()
    builder = Builder(db, nodes, raw_minutes)
    rows = builder.build()
    # the rollups come straight from SQL up to the newest sample; the collector's own rollup compute is timed
    # on a few raw minutes (rolling a 1,024-node hour would add ~20 minutes to the build on a busy 2-core host)
    rows.update(
        add_rollups(
            db, nodes, builder.end + timedelta(minutes=1), days * 24, min(days, WEEK_MINUTE_DAYS) * 24
        )
    )
    rollup = time_rollup(db, min(WEEK_TIMED_MINUTES, raw_minutes / 2))
    built_s = time.perf_counter() - t0
    marker.write_text(json.dumps({"size": want, "rows": rows, "rollup": rollup}))
    return db, rows, built_s, rollup


def week_case(args: argparse.Namespace, workdir: Path) -> dict:
    """Time every page over the week-long store at each of ``WEEK_WINDOWS_S``."""
    from c4.report import format_table
    from c4.sim.procs import start_collector

    global WINDOW_S
    db, rows, built_s, rollup = ensure_week_store(
        workdir / "week", args.week_nodes, args.week_days, args.week_raw_minutes
    )
    how = f"built in {built_s:.1f} s" if built_s else "reused"
    print(
        f"week store: {args.week_nodes} nodes, {args.week_days:g} days of rollups, {args.week_raw_minutes:g} min raw: "
        f"{sum(rows.values()):,} rows ({how}) at {db}; the collector's minute rollup computed "
        f"{rollup['rows_per_s']:,} raw rows/s ({rollup['raw_rows']:,} rows of {rollup['minutes']:g} min in "
        f"{rollup['seconds']} s, measured when built: {rollup['tables']})",
        flush=True,
    )
    out: dict = {
        "nodes": args.week_nodes,
        "days": args.week_days,
        "rows": sum(rows.values()),
        "rollup": rollup,
    }
    collector = start_collector(workdir / "week")
    try:
        for name, window_s in WEEK_WINDOWS_S.items():
            WINDOW_S = window_s
            results = time_pages(collector.address, args.repeat)
            slowest = max(results, key=lambda r: r["median_s"])
            print(f"week store, window {name}:")
            print(format_table(results))
            verdict = "meets" if slowest["median_s"] < TARGET_S else "MISSES"
            print(
                f"slowest page: {slowest['page']} {slowest['median_s']:.3f} s ({verdict} the {TARGET_S:g} s target)"
            )
            out[f"window_{name}"] = {
                "window_s": window_s,
                "pages": {r["page"]: round(r["median_s"], 4) for r in results},
                "cold_pages": {r["page"]: round(r["cold_s"], 4) for r in results},
                "slowest_s": round(slowest["median_s"], 4),
                "slowest_page": slowest["page"],
            }
    finally:
        WINDOW_S = args.window_s
        collector.stop()
    out["slowest_s"] = max(v["slowest_s"] for k, v in out.items() if k.startswith("window_"))
    return out


def run(args: argparse.Namespace) -> int:
    """Build (or reuse) the store, serve it with a real collector, time the pages."""
    import os

    from c4.report import format_table
    from c4.sim.procs import start_collector

    workdir = Path(args.workdir).resolve()
    db, rows, built_s = ensure_store(workdir, args.nodes, args.minutes)
    total = sum(rows.values())
    how = f"built in {built_s:.1f} s" if built_s else "reused"
    print(
        f"store: {args.nodes} nodes x 8 GPUs x 8 ports, {args.minutes:g} min at 1 Hz: {total:,} rows ({how}) at {db}",
        flush=True,
    )
    os.environ["C4_COLLECTOR_DIAGNOSE_INTERVAL_S"] = "0"  # time the dashboard, not the diagnosis
    os.environ["C4_COLLECTOR_ROLLUP_INTERVAL_S"] = "0"  # the stores are rolled up when built
    global WINDOW_S
    collector = start_collector(workdir)
    try:
        WINDOW_S = args.window_s
        results = time_pages(collector.address, args.repeat)
        WINDOW_S = WIDE_WINDOW_S
        wide = time_pages(collector.address, args.repeat)
    finally:
        WINDOW_S = args.window_s
        collector.stop()
    print(f"window {args.window_s:g} s (the pages' default view):")
    print(format_table(results))
    slowest = max(results, key=lambda r: r["median_s"])
    verdict = "meets" if slowest["median_s"] < TARGET_S else "MISSES"
    print(
        f"slowest page: {slowest['page']} {slowest['median_s']:.3f} s ({verdict} the {TARGET_S:g} s target)"
    )
    slowest_wide = max(wide, key=lambda r: r["median_s"])
    print(
        f"with the widest window ({WIDE_WINDOW_S:g} s): "
        + ", ".join(f"{r['page']} {r['median_s']:.3f} s" for r in wide)
        + f"; slowest {slowest_wide['page']} {slowest_wide['median_s']:.3f} s"
    )
    week = week_case(args, workdir) if args.week_nodes > 0 else None
    if args.json:
        print(
            json.dumps(
                {
                    "week": week,
                    "pages": {r["page"]: round(r["median_s"], 4) for r in results},
                    "cold_pages": {r["page"]: round(r["cold_s"], 4) for r in results},
                    "slowest_s": round(slowest["median_s"], 4),
                    "slowest_page": slowest["page"],
                    "window_s": args.window_s,
                    "pages_1h_window": {r["page"]: round(r["median_s"], 4) for r in wide},
                    "slowest_1h_window_s": round(slowest_wide["median_s"], 4),
                    "target_s": TARGET_S,
                    "nodes": args.nodes,
                    "minutes": args.minutes,
                    "rows": total,
                }
            )
        )
    return 0
