"""PyTorch Flight Recorder dumps (pickle or JSON): which ranks are missing from the last collective."""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DumpError(ValueError):
    """A dump file cannot be read; the message names the file."""


@dataclass
class RankDump:
    """What one rank's recorder held."""

    rank: int
    path: Path
    entries: list[dict[str, Any]]
    pg_config: dict[str, Any] = field(default_factory=dict)
    version: str = ""  # the dump's "version" key, e.g. "2.5"
    entries_skipped: int = 0  # items of "entries" that are not dicts
    pg_status: dict[str, Any] = field(default_factory=dict)  # pg_id -> last enqueued/started/completed seq


class _SafeUnpickler(pickle.Unpickler):
    """Dumps hold only builtin containers; refuse anything that would run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dump")


def load_dump(path: Path) -> RankDump:
    """Read one dump (pickle or JSON). Rank from the dump, else the trailing digits of the file name."""
    raw = path.read_bytes()
    try:
        data = (
            json.loads(raw)
            if raw[:1] in (b"{", b"[")
            else _SafeUnpickler(__import__("io").BytesIO(raw)).load()
        )
    except (json.JSONDecodeError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DumpError(f"{path.name}: not a Flight Recorder dump ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries", []), list):
        raise DumpError(f"{path.name}: no 'entries' list")
    rank = data.get("rank")
    if not isinstance(rank, int):
        m = re.search(r"(\d+)(?:\.\w+)?$", path.name)
        if not m:
            raise DumpError(f"{path.name}: no rank in the dump or the file name")
        rank = int(m.group(1))
    raw_entries = data.get("entries", [])
    entries = [e for e in raw_entries if isinstance(e, dict)]
    return RankDump(
        rank,
        path,
        entries,
        data.get("pg_config") or {},
        str(data.get("version", "")),
        len(raw_entries) - len(entries),
        data.get("pg_status") if isinstance(data.get("pg_status"), dict) else {},
    )


def load_dir(directory: Path) -> tuple[list[RankDump], list[str]]:
    """Every dump in a directory; unreadable files are reported, not fatal."""
    dumps, problems = [], []
    for path in sorted(p for p in Path(directory).iterdir() if p.is_file()):
        try:
            dumps.append(load_dump(path))
        except (DumpError, OSError) as exc:
            problems.append(str(exc))
    return dumps, problems


def _pg(entry: dict[str, Any]) -> str:
    pg = entry.get("process_group")
    if isinstance(pg, (list, tuple)) and pg:
        return str(pg[0])
    return str(entry.get("pg_id", pg if pg is not None else "default"))


@dataclass
class GroupVerdict:
    """Hang localization for one process group."""

    process_group: str
    last_seq: int
    op: str
    ranks: list[int]
    missing: list[int]  # never entered the last collective
    stuck: list[int]  # entered it but did not complete
    last_seq_by_rank: dict[int, int]
    members: list[int] = field(default_factory=list)  # the group's ranks, as pg_config lists them
    no_dump: list[int] = field(default_factory=list)  # members with no dump in the directory


def collective_seq(entry: dict[str, Any]) -> int | None:
    """The collective's sequence number, or None for a p2p op (it carries the last collective's number)."""
    if entry.get("is_p2p") is True:
        return None
    seq = entry.get("collective_seq_id", entry.get("seq_id"))  # "seq_id" in format versions 1.x
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def pg_members(pg_info: Any) -> list[int]:
    """A group's ranks from its pg_config entry: text "[0, 1]" in a dict (2.x), a list of ints (1.x)."""
    ranks = pg_info.get("ranks") if isinstance(pg_info, dict) else pg_info
    if isinstance(ranks, str):
        try:
            ranks = json.loads(ranks)
        except ValueError:
            return []
    if not isinstance(ranks, list):
        return []
    return sorted({r for r in ranks if isinstance(r, int) and not isinstance(r, bool)})


def _seq_number(value: Any) -> int | None:
    """A pg_status counter: an int in pickles, text ("2") in JSON dumps."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return None


def group_status(dump: RankDump) -> dict[str, tuple[int, int]]:
    """Per group name: (last enqueued, last completed) collective from pg_status, keyed by pg_id in the dump."""
    names = {str(e.get("pg_id")): _pg(e) for e in dump.entries if "pg_id" in e}
    out = {}
    for pg_id, status in dump.pg_status.items():
        if not isinstance(status, dict) or str(pg_id) not in names:
            continue
        enqueued = _seq_number(status.get("last_enqueued_collective"))
        completed = _seq_number(status.get("last_completed_collective"))
        if enqueued is not None and completed is not None:
            out[names[str(pg_id)]] = (enqueued, completed)
    return out


def find_missing_ranks(dumps: list[RankDump]) -> list[GroupVerdict]:
    """Per process group: the latest collective any rank entered, and who never entered / never finished it."""
    by_pg: dict[str, dict[int, list[tuple[int, dict[str, Any]]]]] = {}
    members: dict[str, set[int]] = {}
    status: dict[str, dict[int, tuple[int, int]]] = {}
    for d in dumps:
        for pg, counters in group_status(d).items():
            status.setdefault(pg, {})[d.rank] = counters
        for pg, info in d.pg_config.items():
            members.setdefault(str(pg), set()).update(pg_members(info))
        for e in d.entries:
            seq = collective_seq(e)
            if seq is not None:
                by_pg.setdefault(_pg(e), {}).setdefault(d.rank, []).append((seq, e))
        for pg in d.pg_config:
            by_pg.setdefault(str(pg), {}).setdefault(d.rank, [])
    dumped = {d.rank for d in dumps}
    verdicts = []
    for pg, ranks in sorted(by_pg.items()):
        pg_status = status.get(pg, {})
        last_by_rank = {
            r: max([seq for seq, _ in es] + [pg_status.get(r, (0, 0))[0]]) for r, es in ranks.items()
        }
        if not last_by_rank:
            continue
        last = max(last_by_rank.values())
        if last == 0:
            continue
        op = ""
        stuck = []
        for r, es in ranks.items():
            at_last = [e for seq, e in es if seq == last]
            for e in at_last:
                op = op or str(e.get("profiling_name", ""))
                if e.get("state") != "completed":
                    stuck.append(r)
            enqueued, completed = pg_status.get(r, (0, last))
            if not at_last and enqueued >= last > completed:  # its entry was overwritten or not dumped
                stuck.append(r)
        missing = sorted(r for r, s in last_by_rank.items() if s < last)
        group = sorted(members.get(pg, ()))
        no_dump = [r for r in group if r not in dumped]
        verdicts.append(
            GroupVerdict(
                pg, last, op, sorted(ranks), missing, sorted(set(stuck)), last_by_rank, group, no_dump
            )
        )
    return verdicts
