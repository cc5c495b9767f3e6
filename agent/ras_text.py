"""NCCL RAS text status report (``ncclras [-v]``, NCCL 2.24 .. 2.30) -> nccl_ras_status rows.

The text report is written for people: it names only the communicators with a problem (blocks
``#<group>-<n> (<hash>) INCOMPLETE|ERROR|MISMATCH`` under ``Errors`` and ``Warnings``) and, within
them, only the outlier ranks. What it says is read line by line with the printf formats of
src/ras/client_support.cc (``rasClientRunComms``, ``rasClientBreakDownErrors``):

* the group table (``Group  Comms ... Status  Errors``): status, errors and size of each group;
* ``DEAD``: the processes RAS declared dead (``Process <pid> on node <ip> managing GPU <n>``);
* ``INCOMPLETE`` blocks: the missing ranks, as ``The missing rank(s): 3,5`` (2.24, 2.25) or one
  ``Rank <r> -- GPU <g> managed by process <pid> on node <ip>`` line each (2.26+);
* ``MISMATCH`` blocks: ranks grouped by status or by collective count (``<n> ranks have launched up
  to operation <c>``; per operation type, ``different AllGather operation counts``, since 2.26);
* ``ERROR`` blocks: the ranks with initialization or asynchronous errors.

A missing rank whose process is in the ``DEAD`` list is a dead rank. A line inside a communicator
block that matches none of these formats is counted as skipped (reason ``text_line_unknown``).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from c4.agent.ras_json import normalize_hash

_GROUP_HEADER = re.compile(r"^Group\s+Comms\s+Nodes\s+Ranks\s+Ranks\s+Ranks\s+Status\s+Errors\s*$")
_GROUP_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s*$")
_COMM = re.compile(r"^#(\d+)-(\d+) \(([0-9a-fA-F]+)\) (INCOMPLETE|ERROR|MISMATCH)\s*$")
_PROCESS = re.compile(r"^  Process (\d+) on node (\S+) managing GPUs? (.+?)\s*$")
_PLACE = r"(?:GPU (\d+)(?: \(NVML (\d+)\))? managed by process (\d+) on node (\S+)|\[process information not found\])"
_RANK = re.compile(
    r"^  Rank (\d+)(?: has status (\S+)| has launched up to operation (\d+)| has not launched any operations"
    r"| reported (.+?))? -- " + _PLACE + r"\s*$"
)
_N_STATUS = re.compile(r"^  \d+ ranks have status (\S+)\s*$")
_N_LAUNCHED = re.compile(r"^  \d+ ranks have launched up to operation (\d+)\s*$")
_N_NONE = re.compile(r"^  \d+ ranks have not launched any operations\s*$")
_N_REPORTED = re.compile(r"^  \d+ ranks reported (.+?)\s*$")
_MISSING_LIST = re.compile(r"^  The missing ranks?: ([\d,]+)\s*$")
_UNKNOWN_LIST = re.compile(r"^  The unknown ranks: ([\d,]+)\s*$")
_UNKNOWN_ONE = re.compile(r"^  Rank (\d+) has status (\S+)\s*$")
_DIFF_STATUS = re.compile(r"^  Communicator ranks have different status\s*$")
_DIFF_COUNTS = re.compile(r"^  Communicator ranks have different (\w+) operation counts\s*$")
_INIT_ERR = re.compile(r"^  Initialization errors? on \d+ ranks?\s*$")
_ASYNC_ERR = re.compile(r"^  Asynchronous errors? on \d+ ranks?\s*$")
_KNOWN = re.compile(
    r"^  (?:Missing communicator data from \d+ ranks?|\[could not find information on .*\])\s*$"
)


class _Comm:
    """What the report says about one communicator."""

    def __init__(self, comm_hash: str, group: int) -> None:
        self.hash, self.group = comm_hash, group
        self.missing: dict[int, dict[str, Any]] = {}
        self.ranks: dict[int, dict[str, Any]] = {}
        self.counts: dict[int, dict[str, int]] = {}

    def rank(self, r: int) -> dict[str, Any]:
        return self.ranks.setdefault(r, {})


def _place(m: re.Match, first: int) -> dict[str, Any]:
    """host, pid and GPU (the NVML index when NCCL prints one) from the ``-- GPU ...`` part of a line."""
    cuda, nvml, pid, host = m.group(first, first + 1, first + 2, first + 3)
    if pid is None:
        return {}
    return {"gpu": int(nvml if nvml is not None else cuda), "pid": int(pid), "host": host}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.isdigit()]


class TextReport:
    """Reads one text report line by line; ``rows()`` gives the nccl_ras_status rows."""

    def __init__(self) -> None:
        self.groups: dict[int, tuple[str, str, int]] = {}  # group -> (status, errors, ranks per comm)
        self.dead: set[tuple[int, str]] = set()  # (pid, host) of dead processes
        self.comms: dict[str, _Comm] = {}
        self.skipped: Counter = Counter()
        self._in_groups = False
        self._block: str = ""  # DEAD, INCOMPLETE, ..., or "comm"
        self._comm: _Comm | None = None
        self._kind = ""  # INCOMPLETE, ERROR or MISMATCH of the current comm block
        self._mode = ""  # status, counts:<op>, init, async
        self._value: Any = None  # the status, count or error the following rank lines share

    def feed(self, line: str) -> None:
        """One line of the report."""
        line = line.rstrip("\r\n")
        if _GROUP_HEADER.match(line):
            self._in_groups = True
            return
        if self._in_groups:
            m = _GROUP_ROW.match(line)
            if m:
                g, status, errors, per_comm = int(m[1]), m[7], m[8], int(m[5])
                self.groups[g] = (status, errors, per_comm)
                return
            if line.strip() and not line.lstrip().startswith("#"):
                self._in_groups = False
        if not line.strip():
            return
        if not line.startswith(" "):
            self._start_block(line)
            return
        if self._block == "DEAD":
            m = _PROCESS.match(line)
            if m:
                self.dead.add((int(m[1]), m[2]))
        elif self._block == "comm":
            self._comm_line(line)

    def _start_block(self, line: str) -> None:
        m = _COMM.match(line)
        self._mode, self._value = "", None
        if m:
            h = normalize_hash(m[3])
            self._comm = self.comms.setdefault(h, _Comm(h, int(m[1])))
            self._block, self._kind = "comm", m[4]
        else:
            self._block, self._comm = line.strip(), None

    def _comm_line(self, line: str) -> None:
        c = self._comm
        assert c is not None
        if m := _RANK.match(line):
            self._rank_line(c, m)
        elif _DIFF_STATUS.match(line):
            self._mode, self._value = "status", None
        elif m := _DIFF_COUNTS.match(line):
            self._mode, self._value = f"counts:{m[1]}", None
        elif _INIT_ERR.match(line):
            self._mode, self._value = "init", None
        elif _ASYNC_ERR.match(line):
            self._mode, self._value = "async", None
        elif m := _N_STATUS.match(line):
            self._value = m[1]
        elif m := _N_LAUNCHED.match(line):
            self._value = int(m[1])
        elif _N_NONE.match(line):
            self._value = 0
        elif m := _N_REPORTED.match(line):
            self._value = m[1]
        elif m := _MISSING_LIST.match(line):
            for r in _ints(m[1]):
                c.missing.setdefault(r, {})
        elif m := _UNKNOWN_LIST.match(line):
            for r in _ints(m[1]):
                c.rank(r)["status"] = "UNKNOWN"
        elif m := _UNKNOWN_ONE.match(line):
            c.rank(int(m[1]))["status"] = m[2]
        elif not _KNOWN.match(line):
            self.skipped["text_line_unknown"] += 1

    def _rank_line(self, c: _Comm, m: re.Match) -> None:
        r, place = int(m[1]), _place(m, 5)
        if self._kind == "INCOMPLETE":
            c.missing.setdefault(r, {}).update(place)
            return
        row = c.rank(r)
        row.update(place)
        if self._mode == "status":
            row["status"] = m[2] or self._value
        elif self._mode.startswith("counts:"):
            count = int(m[3]) if m[3] else self._value
            if count is None and " has not launched any operations -- " in m[0]:
                count = 0
            if count is not None:
                c.counts.setdefault(r, {})[self._mode[7:]] = count
        elif self._mode in ("init", "async"):
            row["errors"] = f"{self._mode}: {m[4] or self._value}"

    def rows(self) -> list[dict[str, Any]]:
        """One row per communicator the report names, and one per rank it says something about."""
        out = []
        for c in self.comms.values():
            status, errors, size = self.groups.get(c.group, ("", "", None))
            dead = sorted(r for r, p in c.missing.items() if (p.get("pid"), p.get("host")) in self.dead)
            out.append(
                {
                    "comm_hash": c.hash,
                    "scope": "communicator",
                    "rank": None,
                    "n_ranks": size,
                    "status": status,
                    "errors": errors,
                    "coll_count": None,
                    "missing_ranks": ",".join(map(str, sorted(c.missing))),
                    "dead_ranks": ",".join(map(str, dead)),
                    "n_missing": len(c.missing),
                    "n_dead": len(dead),
                }
            )
            ranks = {r: dict(v) for r, v in c.ranks.items()}
            for r, counts in c.counts.items():
                ranks.setdefault(r, {})["coll_count"] = sum(counts.values())
            for r, p in c.missing.items():
                ranks[r] = {**p, "status": "DEAD" if r in dead else "UNRESPONSIVE" if p else "MISSING"}
            for r, v in sorted(ranks.items()):
                out.append(
                    {
                        "comm_hash": c.hash,
                        "scope": "rank",
                        "rank": r,
                        "n_ranks": size,
                        "status": v.get("status", ""),
                        "errors": v.get("errors", ""),
                        "coll_count": v.get("coll_count"),
                        "missing_ranks": "",
                        "dead_ranks": "",
                        "n_missing": None,
                        "n_dead": None,
                        "host": v.get("host", ""),
                        "pid": v.get("pid"),
                        "gpu": v.get("gpu"),
                    }
                )
        return out


def text_rows(text: str, skipped: Counter) -> list[dict[str, Any]]:
    """Rows of one text report; lines of communicator blocks that cannot be read are counted in ``skipped``."""
    report = TextReport()
    for line in text.splitlines():
        report.feed(line)
    skipped.update(report.skipped)
    return report.rows()
