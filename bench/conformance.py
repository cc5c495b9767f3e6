"""``c4 bench conformance``: the agent's parsers over the corpus of real artifacts, fact by fact.

The corpus (``tests/conformance/``) holds one folder per artifact: the file(s) as a real producer
wrote them, ``SOURCE.md`` (where it came from, which version, its license) and ``expected.json``::

    {
      "sampler": "xid_kmsg",                     # the agent sampler that reads this format
      "options": {"from_start": true},           # its options, as in [agent.samplers.<name>]
      "paths": {"kmsg_path": "kern.log"},        # options that are paths, relative to this folder
      "facts": [                                 # rows the sampler must produce (a subset of columns)
        {"table": "gpu_events", "row": {"xid": 79}}
      ],
      "absent": [{"table": "gpu_events", "row": {"xid": 13}}],
      "unparsed_lines": 0,                       # records the sampler must count as skipped
      "unparsed_by_reason": {}                   # and why (its skipped_by_reason), when it says
    }

A fact holds when some row of its table has every value it names (floats to 1e-6 relative,
timestamps as ISO-8601 text). Every ``absent`` entry and the ``unparsed_lines`` count are facts too.

An artifact that no agent sampler reads names a ``"reader"`` of ``READERS`` instead of ``"sampler"``
(e.g. ``"reader": "flight_recorder"`` with ``"paths": {"dump_dir": "dumps"}``); the reader's output
becomes rows of pseudo-tables (``fr_entries``, ``fr_missing``, ...) that the facts name.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from c4.agent.batcher import convert_rows, utc_from_ns
from c4.agent.registry import SamplerConfigError, SamplerContext, build_sampler
from c4.analytics.flight_recorder import collective_seq, find_missing_ranks, load_dir
from c4.catalogue import load
from c4.report import format_table

HELP = "Parsers vs. the corpus of real artifacts (tests/conformance/): facts checked, facts that hold, unparsed lines."

#: Ticks a sampler gets to read an artifact to its end (it stops earlier once a tick brings nothing new).
MAX_TICKS = 50
#: The node name artifacts are read as.
CONFORMANCE_NODE = "conformance-node"


@dataclass
class ArtifactResult:
    """One artifact read by its sampler: how many facts it carries, which failed and why."""

    path: Path
    sampler: str
    facts: int = 0
    failures: list[str] = field(default_factory=list)
    unparsed_lines: int = 0
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def facts_ok(self) -> int:
        """Facts that hold."""
        return self.facts - len(self.failures)


def corpus(root: Path) -> list[Path]:
    """Every artifact folder (one holding expected.json) under root."""
    return sorted(p.parent for p in Path(root).rglob("expected.json"))


def _comparable(value: Any) -> Any:
    """A row value as an expected.json value would spell it."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _same(got: Any, want: Any) -> bool:
    got = _comparable(got)
    if isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
        return math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(want, dict | list) and isinstance(got, str):  # a JSON column
        try:
            return json.loads(got) == want
        except ValueError:
            return False
    if isinstance(want, bool) or isinstance(got, bool):  # True is not 1
        return got is want
    return got == want


def matches(row: dict[str, Any], want: dict[str, Any]) -> bool:
    """Whether a row has every value ``want`` names."""
    return all(k in row and _same(row[k], v) for k, v in want.items())


def _nearest(rows: list[dict[str, Any]], want: dict[str, Any]) -> str:
    """The row closest to ``want`` (most columns equal) and where it differs, for the failure message."""
    if not rows:
        return "the table has no rows"
    best = max(rows, key=lambda r: sum(k in r and _same(r[k], v) for k, v in want.items()))
    diff = {
        k: _comparable(best.get(k, "<missing>"))
        for k, v in want.items()
        if not (k in best and _same(best[k], v))
    }
    return f"nearest of {len(rows)} rows differs in {diff}"


def read_artifact(
    folder: Path, spec: dict[str, Any]
) -> tuple[dict[str, list[dict[str, Any]]], int, dict[str, int], list[str]]:
    """Rows per table (typed by the catalogue, as the collector stores them), records skipped, per reason, errors."""
    options = dict(spec.get("options") or {})
    for key, rel in (spec.get("paths") or {}).items():
        options[key] = str((folder / rel).resolve())
    ctx = SamplerContext(node=CONFORMANCE_NODE, job="", labels={})
    sampler = build_sampler(spec["sampler"], options, ctx)
    catalogue = load()
    errors: list[str] = []
    rows: dict[str, list[dict[str, Any]]] = {}
    try:
        sampler.probe()
        now_ns = time.time_ns()
        defaults = {"ts": utc_from_ns(now_ns), "node": CONFORMANCE_NODE, "job": ""}
        for tick in range(MAX_TICKS):
            out = sampler.sample(now_ns + tick)
            if tick and not any(out.values()):
                break
            for table, raw in out.items():
                converted = convert_rows(catalogue, table, raw, defaults)
                if converted.dropped:
                    errors.append(
                        f"{table}: {converted.dropped} rows do not fit the catalogue: {converted.first_error}"
                    )
                rows.setdefault(table, []).extend(converted.table.to_pylist())
        skipped = int(getattr(sampler, "records_skipped", 0) or 0)
        reasons = dict(getattr(sampler, "skipped_by_reason", None) or {})
    finally:
        sampler.close()
    return rows, skipped, reasons, errors


#: What a reader returns: rows per pseudo-table, records skipped, skipped per reason, errors.
ReaderOutput = tuple[dict[str, list[dict[str, Any]]], int, dict[str, int], list[str]]


def _path(folder: Path, spec: dict[str, Any], key: str) -> Path:
    """A path option of expected.json, relative to the artifact folder."""
    rel = (spec.get("paths") or {}).get(key)
    if rel is None:
        raise ValueError(f'expected.json has no "paths": {{"{key}": ...}}')
    return (folder / rel).resolve()


def read_flight_recorder(folder: Path, spec: dict[str, Any]) -> ReaderOutput:
    """PyTorch Flight Recorder dumps: one row per dump, per entry, and per process-group verdict."""
    dumps, problems = load_dir(_path(folder, spec, "dump_dir"))
    dump_rows, entry_rows = [], []
    for d in dumps:
        no_seq = sum(collective_seq(e) is None and e.get("is_p2p") is not True for e in d.entries)
        dump_rows.append(
            {
                "file": d.path.name,
                "rank": d.rank,
                "version": d.version,
                "entries": len(d.entries),
                "entries_without_seq": no_seq,
            }
        )
        for e in d.entries:
            pg = e.get("process_group")
            pg_name, pg_desc = (list(pg) + [None, None])[:2] if isinstance(pg, list | tuple) else (pg, None)
            entry_rows.append(
                {"rank": d.rank, "file": d.path.name, "process_group": pg_name, "process_group_desc": pg_desc}
                | {k: v for k, v in e.items() if k not in ("frames", "process_group")}
            )
    verdict_rows = [
        {
            "process_group": v.process_group,
            "last_seq": v.last_seq,
            "op": v.op,
            "ranks": v.ranks,
            "missing": v.missing,
            "stuck": v.stuck,
            "members": v.members,
            "no_dump": v.no_dump,
        }
        for v in find_missing_ranks(dumps)
    ]
    rows = {"fr_dumps": dump_rows, "fr_entries": entry_rows, "fr_missing": verdict_rows}
    reasons = {"unreadable_dump": len(problems), "entry_not_a_dict": sum(d.entries_skipped for d in dumps)}
    reasons = {k: n for k, n in reasons.items() if n}
    return rows, sum(reasons.values()), reasons, []


#: Readers that are not agent samplers, by the name expected.json gives as "reader".
READERS: dict[str, Callable[[Path, dict[str, Any]], ReaderOutput]] = {
    "flight_recorder": read_flight_recorder,
}


def check_artifact(folder: Path) -> ArtifactResult:
    """Read one artifact with its sampler (or reader) and check every fact of its expected.json."""
    spec = json.loads((folder / "expected.json").read_text())
    result = ArtifactResult(folder, spec.get("sampler") or spec.get("reader") or "?")
    if not (folder / "SOURCE.md").is_file():
        result.facts += 1
        result.failures.append("no SOURCE.md (where the artifact came from, its version and license)")
    try:
        if "reader" in spec:
            if spec["reader"] not in READERS:
                raise ValueError(f"no reader {spec['reader']!r} (known: {sorted(READERS)})")
            rows, skipped, reasons, errors = READERS[spec["reader"]](folder, spec)
        else:
            rows, skipped, reasons, errors = read_artifact(folder, spec)
    except (SamplerConfigError, OSError, ValueError) as exc:
        facts = spec.get("facts") or []
        result.facts += len(facts) + 1
        result.failures += [f"the sampler could not read the artifact: {exc}"] * (len(facts) + 1)
        return result
    result.rows, result.unparsed_lines = rows, skipped
    result.facts += 1
    if errors:
        result.failures.append("; ".join(errors))
    for fact in spec.get("facts") or []:
        result.facts += 1
        table, want = fact["table"], fact["row"]
        if not any(matches(r, want) for r in rows.get(table, [])):
            result.failures.append(f"{table}: no row with {want}; {_nearest(rows.get(table, []), want)}")
    for fact in spec.get("absent") or []:
        result.facts += 1
        table, want = fact["table"], fact["row"]
        if any(matches(r, want) for r in rows.get(table, [])):
            result.failures.append(f"{table}: a row with {want} must not exist")
    if "unparsed_lines" in spec:
        result.facts += 1
        if skipped != spec["unparsed_lines"]:
            result.failures.append(
                f"{skipped} records skipped as unparsable, expected {spec['unparsed_lines']}"
            )
    if "unparsed_by_reason" in spec:
        result.facts += 1
        if reasons != spec["unparsed_by_reason"]:
            result.failures.append(
                f"records skipped per reason {reasons}, expected {spec['unparsed_by_reason']}"
            )
    return result


def configure(parser: argparse.ArgumentParser) -> None:
    """--corpus DIR, --verbose."""
    parser.add_argument(
        "--corpus",
        default="tests/conformance",
        help="corpus root (default tests/conformance, from the repository root)",
    )
    parser.add_argument("--verbose", action="store_true", help="print every failed fact")


def run(args: argparse.Namespace) -> int:
    """Check every artifact; exit 1 when a fact fails."""
    root = Path(args.corpus)
    folders = corpus(root) if root.is_dir() else []
    if not folders:
        print(
            f"c4 bench conformance: no artifacts (folders with expected.json) under {root}", file=sys.stderr
        )
        return 2
    results = [check_artifact(f) for f in folders]
    table = [
        {
            "artifact": str(r.path.relative_to(root)),
            "sampler": r.sampler,
            "facts": r.facts,
            "facts_ok": r.facts_ok,
            "unparsed_lines": r.unparsed_lines,
        }
        for r in results
    ]
    print(format_table(table))
    for r in results:
        for failure in r.failures if args.verbose else r.failures[:3]:
            print(f"FAIL {r.path.relative_to(root)}: {failure}")
    summary = {
        "artifacts": len(results),
        "facts": sum(r.facts for r in results),
        "facts_ok": sum(r.facts_ok for r in results),
        "unparsed_lines": sum(r.unparsed_lines for r in results),
    }
    print(
        f"{summary['artifacts']} artifacts, {summary['facts_ok']}/{summary['facts']} facts hold, "
        f"{summary['unparsed_lines']} lines unparsed"
    )
    if args.json:
        print(json.dumps(summary))
    return 0 if summary["facts_ok"] == summary["facts"] else 1
