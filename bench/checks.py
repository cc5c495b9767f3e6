"""``c4 bench checks``: the collector's CPU per node tick, batches checked one by one vs. many at once.

The same agents' payloads (a real 8-GPU, 8-NIC node's tick, encoded by the agent's own encoder; the
agent's health rows, written every 10 s, left out) go
through the collector's admission and commit twice in one process, alternating: checked batch by batch
as they arrive (``validate.check_payload``) or framed on arrival and checked in the writer, a table's
batches of many agents together (``validate.frame_payload`` + ``batch_checks.commit_checked``), each
into a real DuckDB file. CPU time (this process), so the ratio holds on a busy host.

With ``--hostile``, the together mode twice more with one more agent in every commit group that
sends rows of another node (refused): with the writer's memory of refused agents (``Suspects``:
after its first refusal only that agent's batches are checked one by one) and without it (every
group it is in is checked one by one).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HELP = "Collector CPU per node tick: admission + commit with batch-by-batch checks vs. checks of many agents' batches at once."

MODES = ("alone", "together")


def configure(parser: argparse.ArgumentParser) -> None:
    """Benchmark size."""
    parser.add_argument("--agents", type=int, default=500, help="simulated 8-GPU nodes (default 500)")
    parser.add_argument(
        "--ticks-per-batch",
        default="1,5",
        help="comma-separated: ticks per batch, as agents with flush_interval_s = N s send (default 1,5)",
    )
    parser.add_argument(
        "--group", type=int, default=4096, help="batches per writer commit (the collector's default 4096)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per mode; medians reported")
    parser.add_argument("--workdir", help="directory for the databases (default: a temp dir)")
    parser.add_argument(
        "--hostile",
        action="store_true",
        help="also: a hostile agent in every commit group, refused agents checked apart vs. not",
    )


def _payloads(agents: int, ticks: int, root: Path) -> list[list[tuple[str, int, bytes, int]]]:
    from c4.bench.load import HEALTH_TABLES, node_tick, payloads_for

    (root / "node").mkdir(parents=True, exist_ok=True)
    tick = node_tick(root / "node")
    return [
        [p for p in payloads_for(tick, f"bench-{a:05d}", ticks) if p[0] not in HEALTH_TABLES]
        for a in range(agents)
    ]


def one_round(
    mode: str, per_agent, group: int, db: Path, liar: tuple | None = None, apart: bool = True
) -> tuple[float, float, int]:
    """(admission CPU s, commit CPU s, rows stored) of every agent's payloads through one mode; with
    ``liar`` (a payload of another node's rows), one batch of it opens every commit group, refused, and
    ``apart`` says whether the writer remembers the refused agent."""
    from c4.arrow_ipc import DecodeLimits
    from c4.catalogue import load
    from c4.collector import validate
    from c4.collector.batch_checks import Suspects, commit_checked
    from c4.collector.store import PendingBatch, Store, Unchecked

    catalogue = load()
    limits = DecodeLimits(1_000_000, 1 << 28)
    store = Store(db, catalogue, threads=1)
    suspects = Suspects() if apart else None
    admission_s = commit_s = 0.0
    rows = 0
    pending: list[PendingBatch] = []
    liar_seq = 0

    def admit(node: str, seq: int, table: str, version: int, payload: bytes) -> None:
        nonlocal admission_s
        c0 = time.process_time()
        spec = validate.spec_for(catalogue, table, version, payload, 1 << 30)
        frame = validate.frame_payload(spec, payload, limits) if mode == "together" else None
        if frame is None:
            checked = validate.check_payload_of(spec, payload, limits)
            pending.append(PendingBatch(node, seq, spec, checked.table))
        else:
            now_us = time.time_ns() // 1000
            unchecked = Unchecked(payload, frame, node, now_us, now_us + 300_000_000, limits)
            pending.append(PendingBatch(node, seq, spec, None, unchecked=unchecked))
        admission_s += time.process_time() - c0

    def commit() -> None:
        nonlocal commit_s, rows, pending
        c0 = time.process_time()
        results = commit_checked(store, pending, suspects)
        commit_s += time.process_time() - c0
        errors = [r.error for b, r in zip(pending, results, strict=True) if r.error and b.agent_id != "liar"]
        if errors:
            raise RuntimeError(f"{len(errors)} batches not stored: {errors[0]}")
        rows += sum(r.rows for r in results)
        pending = []

    try:
        for a, payloads in enumerate(per_agent):
            node = f"bench-{a:05d}"
            for seq, (table, version, payload, _) in enumerate(payloads, start=1):
                if liar is not None and not pending:
                    liar_seq += 1
                    admit("liar", liar_seq, *liar)
                admit(node, seq, table, version, payload)
                if len(pending) >= group:
                    commit()
        if pending:
            commit()
    finally:
        store.close()
    return admission_s, commit_s, rows


def _hostile(args, per_agent, root: Path, node_ticks: int) -> dict:
    """The together mode with a liar in every commit group: refused agents checked apart vs. not."""
    from c4.bench.load import node_tick, payloads_for

    (root / "victim").mkdir(parents=True, exist_ok=True)
    tick = node_tick(root / "victim")
    table, version, payload, _ = next(p for p in payloads_for(tick, "victim") if p[0] == "gpu_samples")
    commit_s: dict[str, list[float]] = {"apart": [], "all": []}
    stored: dict[str, int] = {}
    for r in range(args.rounds):
        for way in ("apart", "all"):
            _, took, rows = one_round(
                "together",
                per_agent,
                args.group,
                root / f"hostile-{way}-{r}.duckdb",
                (table, version, payload),
                apart=way == "apart",
            )
            commit_s[way].append(took)
            stored[way] = rows
    apart = statistics.median(commit_s["apart"]) / node_ticks * 1e6
    every = statistics.median(commit_s["all"]) / node_ticks * 1e6
    return {
        "apart_commit_us_per_node_tick": round(apart, 1),
        "all_commit_us_per_node_tick": round(every, 1),
        "all_vs_apart": round(every / apart, 3) if apart else None,
        "rows_stored": stored,
    }


def _ticks_list(text: str) -> list[int]:
    """``1,5`` -> [1, 5]; [] when any item is not a whole number >= 1."""
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        return []
    return values if all(v >= 1 for v in values) else []


def run(args: argparse.Namespace) -> int:
    """Run both modes alternately per ticks-per-batch; print CPU per node tick and the ratio."""
    ticks_per_batch = _ticks_list(str(args.ticks_per_batch))
    if args.agents < 1 or args.group < 1 or args.rounds < 1 or not ticks_per_batch:
        print(
            "c4 bench checks: --agents, --group and --rounds must be >= 1, --ticks-per-batch a comma-separated "
            f"list of whole numbers >= 1 (got {args.ticks_per_batch!r})",
            file=sys.stderr,
        )
        return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="c4-bench-checks-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _measure(args, work, ticks_per_batch)
    finally:
        if not args.workdir:  # its stores are hundreds of MB: a temporary one goes, whatever happened
            shutil.rmtree(work, ignore_errors=True)


def _measure(args: argparse.Namespace, work: Path, ticks_per_batch: list[int]) -> int:
    """Both modes, alternately, per ticks-per-batch, under ``work``; print the figures (1: stores differ)."""
    import json

    from c4.arrow_ipc import DecodeLimits
    from c4.catalogue import load
    from c4.collector import validate

    cases = []
    for ticks in ticks_per_batch:
        per_agent = _payloads(args.agents, ticks, work / f"tpb{ticks}")
        for table, version, payload, _ in per_agent[0]:  # each schema checked once, as a collector does
            validate.check_payload(load(), table, version, payload, 1 << 30, DecodeLimits(1_000_000, 1 << 28))
        node_ticks = args.agents * ticks
        figures: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
        stored = {}
        for r in range(args.rounds):
            for mode in MODES:
                admission_s, commit_s, rows = one_round(
                    mode, per_agent, args.group, work / f"tpb{ticks}-{mode}-{r}.duckdb"
                )
                figures[mode].append((admission_s, commit_s))
                stored[mode] = rows
        case = {"ticks_per_batch": ticks, "agents": args.agents, "rows_stored": stored}
        for mode in MODES:
            adm = statistics.median(a for a, _ in figures[mode]) / node_ticks * 1e6
            com = statistics.median(c for _, c in figures[mode]) / node_ticks * 1e6
            case[mode] = {
                "admission_us_per_node_tick": round(adm, 1),
                "commit_us_per_node_tick": round(com, 1),
                "total_us_per_node_tick": round(adm + com, 1),
            }
        case["together_vs_alone"] = round(
            case["together"]["total_us_per_node_tick"] / case["alone"]["total_us_per_node_tick"], 3
        )
        if args.hostile:
            case["hostile"] = _hostile(args, per_agent, work / f"tpb{ticks}", node_ticks)
        cases.append(case)
    print(
        f"c4 bench checks: {args.agents} simulated 8-GPU nodes, {args.group} batches per commit, "
        f"CPU of this process, medians of {args.rounds} alternating rounds"
    )
    print(f"{'ticks/batch':>11}  {'mode':<9} {'admission us':>12} {'commit us':>10} {'total us/tick':>13}")
    for c in cases:
        for mode in MODES:
            m = c[mode]
            print(
                f"{c['ticks_per_batch']:>11}  {mode:<9} {m['admission_us_per_node_tick']:>12} "
                f"{m['commit_us_per_node_tick']:>10} {m['total_us_per_node_tick']:>13}"
            )
        print(f"{'':>11}  together / alone = {c['together_vs_alone']}")
        if "hostile" in c:
            h = c["hostile"]
            print(
                f"{'':>11}  with a hostile agent in every group: commit us/tick {h['apart_commit_us_per_node_tick']} "
                f"with refused agents checked apart, {h['all_commit_us_per_node_tick']} without "
                f"(without / apart = {h['all_vs_apart']})"
            )
    if args.json:
        print(json.dumps({"cases": cases}, sort_keys=True))
    if any(c["rows_stored"]["alone"] != c["rows_stored"]["together"] for c in cases) or any(
        c["hostile"]["rows_stored"]["apart"] != c["hostile"]["rows_stored"]["all"]
        for c in cases
        if "hostile" in c
    ):
        print("error: the two modes stored different row counts")
        return 1
    return 0
