"""``c4 agent --test``: probe and sample every source once and print the rows it would send."""

from __future__ import annotations

import time

import polars as pl

from c4.agent.batcher import convert_rows, utc_from_ns
from c4.agent.registry import SamplerContext
from c4.agent.runner import AgentStartError, ScheduledSampler
from c4.agent.sampler import SkipCounter, SkipReasons
from c4.catalogue import load
from c4.client_config import AgentConfig


def print_records(rows: list[dict]) -> None:
    """Each row as `column=value` pairs, four to a line."""
    for i, row in enumerate(rows):
        print(f"-- row {i}")
        pairs = [f"{k}={v}" for k, v in row.items()]
        for j in range(0, len(pairs), 4):
            print("   " + "  ".join(f"{p:<38}" for p in pairs[j : j + 4]).rstrip())


def print_test_sample(cfg: AgentConfig, ctx: SamplerContext, samplers: list[ScheduledSampler]) -> int:
    """Print one tick of every sampler as typed tables; exit code 1 if any sampler failed."""
    catalogue = load()
    failed = 0
    now_ns = time.time_ns()
    defaults = {"ts": utc_from_ns(now_ns), "node": ctx.node, "job": ctx.job}
    print(f"# c4 agent --test node={ctx.node} job={ctx.job or '-'} labels={ctx.labels}")
    for s in samplers:
        try:
            ok = s.probe()
        except AgentStartError as exc:
            print(f"## sampler {s.sampler.name}: FAILED to start: {exc}")
            failed += 1
            continue
        if not ok:
            print(f"## sampler {s.sampler.name}: unavailable ({s.last_error})")
            continue
        try:
            out = s.sampler.sample(now_ns)
            converted = {t: convert_rows(catalogue, t, rows, defaults) for t, rows in out.items()}
        except Exception as exc:
            print(f"## sampler {s.sampler.name}: ERROR {exc}")
            failed += 1
            continue
        finally:
            s.sampler.close()
        tables = {t: c.table for t, c in converted.items()}
        print(f"## sampler {s.sampler.name}: {sum(t.num_rows for t in tables.values())} rows")
        unreadable = getattr(s.sampler, "source_error", "")
        if unreadable:  # a file given as the source that cannot be read is a failure, not "no rows"
            print(f"## sampler {s.sampler.name}: ERROR source not readable: {unreadable}")
            failed += 1
        amended = getattr(s.sampler, "amended_by_reason", {})
        if amended:
            why = ", ".join(f"{k}: {v}" for k, v in sorted(amended.items()))
            print(f"## sampler {s.sampler.name}: {sum(amended.values())} fields made safe ({why})")
        skipped = s.sampler.records_skipped if isinstance(s.sampler, SkipCounter) else 0
        if skipped:  # what the source held that the reader could not use, and why
            reasons = s.sampler.skipped_by_reason if isinstance(s.sampler, SkipReasons) else {}
            why = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
            print(
                f"## sampler {s.sampler.name}: {skipped} records skipped as unreadable ({why or 'no reason given'})"
            )
        for c in converted.values():
            if c.dropped:  # the rows that fit are printed; say which did not
                print(f"## sampler {s.sampler.name}: {c.first_error}")
                failed += 1
        for name, table in tables.items():
            spec = catalogue[name]
            if spec.element is not None:  # a wide table reads best as its per-element view's rows
                rows = spec.element_rows(table.to_pylist())
                print(f"### table {name} ({table.num_rows} rows; {len(rows)} {spec.element.view} rows)")
                print_records(rows[:50])
                continue
            print(f"### table {name} ({table.num_rows} rows)")
            if table.num_columns <= 12:
                with pl.Config(tbl_rows=50, tbl_cols=-1, fmt_str_lengths=40, tbl_width_chars=240):
                    print(pl.from_arrow(table))
            else:  # wide tables read better one record at a time
                print_records(table.to_pylist()[:50])
    return 1 if failed else 0
