"""One NCCL_DEBUG log line: strip what launchers and log collectors put in front, read NCCL's header.

NCCL writes ``<host>:<pid>:<tid> [<cudaDev>] NCCL INFO <message>`` (src/debug.cc, 2.9 to 2.30),
since 2.26 optionally after its own ``[%F %T] `` timestamp (NCCL_DEBUG_TIMESTAMP_FORMAT). In front
of that, launchers and collectors add their own tags; the ones recognised here, in any nesting:

- mpirun ``--tag-output``: ``[1,3]<stdout>:``
- srun ``--label``: ``3: ``
- torchrun ``--tee``/``--redirects``: ``[rank3]:`` and ``[default3]:``
- pdsh and the DeepSpeed launcher: ``worker-0: ``
- a bare rank in brackets, as wrappers that merge per-rank output write it: ``[3] ``
- timestamps: ISO 8601 (``2024-12-04T05:27:48.128Z``, also between ``|`` as CloudWatch exports
  show it, and Kubernetes' CRI ``<ts> stdout F ``), NCCL's ``[2025-12-28 16:04:25]`` and syslog
  (``Dec  4 05:27:48 host python[123]: ``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: NCCL's own header; pid and tid are bounded so a mangled line cannot become a 5000-digit number.
HEADER = re.compile(
    r"(?P<host>[^\s:]*):(?P<pid>\d{1,10}):(?P<tid>\d{1,10}) \[(?P<dev>-?\d{1,6})\] NCCL INFO ?(?P<msg>.*)"
)

#: (name, pattern) of every prefix a launcher or log collector is known to put before NCCL's header.
PREFIXES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("mpirun", re.compile(r"\[\d+,\d+\]<(?:stdout|stderr|stddiag)>: ?")),
    ("torchrun", re.compile(r"\[(?:rank|default)\d+\]: ?")),
    (
        "timestamp",
        re.compile(
            r"\|? *\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?: ?(?:Z|[+-]\d\d:?\d\d|UTC))?\]? *"
            r"(?:\| *)?(?:(?:stdout|stderr) [FP] )?"
        ),
    ),
    ("syslog", re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d [^\s:]+ [^\s:\[]+(?:\[\d+\])?: ")),
    ("srun", re.compile(r"\d+: +")),
    ("rank_bracket", re.compile(r"\[\d+\] +")),
    ("host_label", re.compile(r"[A-Za-z0-9][\w.\-]*: +")),
)
#: At most this many prefixes are stripped from one line.
MAX_PREFIXES = 6


@dataclass(frozen=True)
class NcclLine:
    """NCCL's header fields and the message of one INFO line."""

    host: str
    pid: int
    tid: int
    cuda_dev: int
    msg: str
    prefixes: tuple[str, ...] = ()  # names of the prefixes stripped, outermost first


def read_line(line: str) -> NcclLine | None:
    """The NCCL INFO line inside ``line`` (after any known prefixes), or None if there is none."""
    text = line.strip()
    seen: list[str] = []
    for _ in range(MAX_PREFIXES + 1):
        m = HEADER.fullmatch(text)
        if m:
            return NcclLine(
                m["host"], int(m["pid"]), int(m["tid"]), int(m["dev"]), m["msg"].strip(), tuple(seen)
            )
        for name, pattern in PREFIXES:
            p = pattern.match(text)
            if p and p.end() > 0:
                seen.append(name)
                text = text[p.end() :]
                break
        else:
            return None
    return None


def mentions_nccl_info(line: str) -> bool:
    """Whether a line carries NCCL's INFO marker at all (one that read_line cannot read is a loss)."""
    return " NCCL INFO" in line
