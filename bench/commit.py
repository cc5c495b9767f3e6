"""``c4 bench commit``: the CPU of the store's group commit of node ticks, the INSERT ways side by side.

Each commit of a busy collector holds every table a node tick has (nine), for the agents whose
batches came in meanwhile; at 2,000 agents the writer commits 5-9 times a second, so each commit's
fixed cost (an INSERT per table, the sequence upsert, COMMIT) is paid that often. The same groups of
real sampler rows (one 8-GPU, 8-NIC node's five ticks, as agents advised to flush every 5 s send
them) are committed into a fresh store the way the store does it (``Store._insert_in_order``) and the
way it did before (``_insert_by_name``: a registered view and an ``INSERT ... SELECT`` by column
name), alternately, and the writer thread's CPU per commit is reported with the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

HELP = "Store group commit: CPU per commit of N agents' node ticks, inserting by position vs. by name."


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``c4 bench commit``."""
    parser.add_argument(
        "--agents-per-commit",
        default="20,80,400",
        help="comma-separated agents per commit to measure (default 20,80,400)",
    )
    parser.add_argument("--commits", type=int, default=20, help="commits per measurement (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians reported")


def run(args: argparse.Namespace) -> int:
    """Measure and print."""
    import json
    import sys

    import pyarrow.ipc as ipc

    from c4.bench.load import node_tick, payloads_for
    from c4.catalogue import load
    from c4.collector.store import PendingBatch, Store

    class ByNameStore(Store):
        """The store inserting every table by name through a registered view (the way before)."""

        def _table_columns(self, table: str, side: bool) -> list[str]:
            return []  # never the catalogue's order: every table is written by name

    try:
        sizes = [int(s) for s in str(args.agents_per_commit).split(",") if s.strip()]
    except ValueError:
        print(
            f"c4 bench commit: --agents-per-commit {args.agents_per_commit!r}: give numbers like 20,80",
            file=sys.stderr,
        )
        return 2
    if not sizes or min(sizes) < 1 or args.commits < 1 or args.rounds < 1:
        print(
            "c4 bench commit: --agents-per-commit, --commits and --rounds must be positive", file=sys.stderr
        )
        return 2
    cat = load()
    with tempfile.TemporaryDirectory(prefix="c4-bench-commit-") as tmp:
        work = Path(tmp)
        (work / "node").mkdir()
        tick = node_tick(work / "node")
        per_agent = [
            (cat[table], ipc.open_stream(payload).read_all())
            for table, _version, payload, _rows in payloads_for(tick, "load-node", ticks=5)
        ]

        def cpu_ms_per_commit(kind: type[Store], agents: int, label: str) -> tuple[float, int]:
            """CPU ms per commit of ``agents`` agents' batches, and the rows those commits stored (after one
            commit not timed: what a store does once per connection, e.g. look up its tables' columns)."""
            store = kind(work / f"{label}.duckdb", cat, checkpoint_wal_bytes=1 << 40, threads=1)
            try:
                seqs: dict[str, int] = {}
                groups = []
                for c in range(args.commits + 1):
                    group = []
                    for a in range(agents):
                        agent = f"agent-{c * agents + a}"
                        for spec, table in per_agent:
                            seqs[agent] = seqs.get(agent, 0) + 1
                            group.append(PendingBatch(agent, seqs[agent], spec, table))
                    groups.append(group)
                warm_rows = sum(result.rows for result in store.commit(groups.pop(0)))
                start = time.thread_time()
                for group in groups:
                    if any(result.error for result in store.commit(group)):
                        raise RuntimeError(f"a commit of {agents} agents failed")
                took_ms = 1e3 * (time.thread_time() - start) / args.commits
                stored = -warm_rows + sum(
                    store.con.execute(f'SELECT count(*) FROM "{spec.name}"').fetchone()[0]
                    for spec, _ in per_agent
                )
                return took_ms, stored
            finally:
                store.close()
                for f in work.glob(f"{label}.duckdb*"):
                    f.unlink()

        results = []
        for agents in sizes:
            by_position, by_name = [], []
            stored = {"by_position": set(), "by_name": set()}
            for r in range(args.rounds):
                took, rows = cpu_ms_per_commit(Store, agents, f"pos-{agents}-{r}")
                by_position.append(took)
                stored["by_position"].add(rows)
                took, rows = cpu_ms_per_commit(ByNameStore, agents, f"name-{agents}-{r}")
                by_name.append(took)
                stored["by_name"].add(rows)
            pos, name = statistics.median(by_position), statistics.median(by_name)
            results.append(
                {
                    "agents_per_commit": agents,
                    "rows_per_commit": agents * sum(t.num_rows for _, t in per_agent),
                    "cpu_ms_per_commit_by_position": round(pos, 2),
                    "cpu_ms_per_commit_by_name": round(name, 2),
                    "by_name_over_by_position": round(name / pos, 3) if pos else None,
                    # rows in the store after each run, each way (every round the same)
                    "rows_stored": {way: sorted(counts) for way, counts in stored.items()},
                }
            )
    print("c4 bench commit: CPU per group commit of node ticks (5 ticks per agent batch, 9 tables)")
    print(f"{'agents/commit':>14} {'rows/commit':>12} {'by position ms':>15} {'by name ms':>11} {'ratio':>6}")
    for r in results:
        print(
            f"{r['agents_per_commit']:>14} {r['rows_per_commit']:>12} "
            f"{r['cpu_ms_per_commit_by_position']:>15} {r['cpu_ms_per_commit_by_name']:>11} "
            f"{r['by_name_over_by_position']:>6}"
        )
    if args.json:
        print(json.dumps({"commits": args.commits, "rounds": args.rounds, "sizes": results}, sort_keys=True))
    return 0
