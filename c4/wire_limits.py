"""Bounds of the wire contract that both ends check: sequence numbers, agent ids, Hello's strings, times.

The collector refuses what breaks them (INVALID_ARGUMENT naming the rule); an agent can check its
own configuration against the same rules before it ever connects.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

#: Largest sequence number a batch may carry (sequence numbers run 1..MAX_SEQ). Far below 2^64,
#: so that neither end can overflow computing the next one, and a 64-bit signed column holds it.
MAX_SEQ = 2**62

#: Longest agent id, in characters.
MAX_AGENT_ID_CHARS = 128
#: Characters an agent id (and a node's host name) may hold: host names, FQDNs, Kubernetes pod and
#: node names, ``user@host`` and ``host:port`` forms. Nothing that needs quoting in a log line or a
#: Prometheus label.
ID_CHARS = "A-Za-z0-9._:@-"
_AGENT_ID = re.compile(rf"[{ID_CHARS}]{{1,{MAX_AGENT_ID_CHARS}}}\Z")
#: Longest host name (an FQDN is at most 253 characters).
MAX_HOSTNAME_CHARS = 253
_HOSTNAME = re.compile(rf"[{ID_CHARS}]{{1,{MAX_HOSTNAME_CHARS}}}\Z")
#: Label keys: letters, digits and ``._:/-`` (Kubernetes-style ``prefix/name`` keys included).
_LABEL_KEY = re.compile(r"[A-Za-z0-9._:/-]{1,128}\Z")

#: Bounds of Hello's other fields (characters, or entries of a list/map).
MAX_JOB_CHARS = 256
MAX_VERSION_CHARS = 64
MAX_LABELS = 64
MAX_LABEL_VALUE_CHARS = 1024
MAX_INVENTORY_ITEMS = 1024  # GPUs, NIC ports, or table versions of one Hello
MAX_INVENTORY_STRING_CHARS = 256  # a GPU's uuid/name, a NIC's device/netdev, a table name

#: Timestamps the store accepts, in microseconds since the Unix epoch: from 1970-01-01 to the last
#: instant that int64 nanoseconds hold (2262-04-11T23:47:16.854775), so every reader (DuckDB,
#: polars, pandas, Python's datetime) can represent every stored time.
MIN_TS_US = 0
MAX_TS_US = (2**63 - 1) // 1000

#: Default bounds of what one batch may decode to (the collector's max_batch_rows and
#: max_batch_decoded_bytes).
DEFAULT_MAX_BATCH_ROWS = 1_000_000
DEFAULT_MAX_BATCH_DECODED_BYTES = 64 << 20


def shown(value: str, limit: int = 64) -> str:
    """``value`` safe for a log line or an error message: quoted, escaped, cut to ``limit`` characters."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def agent_id_problem(agent_id: str) -> str | None:
    """What is wrong with an agent id (None if nothing): non-empty, <= 128 of [A-Za-z0-9._:@-]."""
    if _AGENT_ID.match(agent_id):
        return None
    if not agent_id:
        return "agent_id is empty"
    if len(agent_id) > MAX_AGENT_ID_CHARS:
        return f"agent_id is {len(agent_id)} characters long, over {MAX_AGENT_ID_CHARS}"
    return f"agent_id {shown(agent_id)} may hold only the characters [{ID_CHARS}]"


def hostname_problem(hostname: str) -> str | None:
    """What is wrong with a node's host name ('' allowed: the agent id stands in)."""
    if not hostname or _HOSTNAME.match(hostname):
        return None
    if len(hostname) > MAX_HOSTNAME_CHARS:
        return f"hostname is {len(hostname)} characters long, over {MAX_HOSTNAME_CHARS}"
    return f"hostname {shown(hostname)} may hold only the characters [{ID_CHARS}]"


#: Control characters (tab aside) and line separators: what would break a log line or a label.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def text_problem(field: str, value: str, limit: int) -> str | None:
    """What is wrong with a free-text field: at most ``limit`` characters, no control characters."""
    if len(value) > limit:
        return f"{field} is {len(value)} characters long, over {limit}"
    if _CONTROL.search(value):
        return f"{field} {shown(value)} holds control characters"
    return None


def label_key_problem(key: str) -> str | None:
    """What is wrong with a label key: 1-128 of [A-Za-z0-9._:/-]."""
    if _LABEL_KEY.match(key):
        return None
    return f"label key {shown(key)} must be 1-128 of the characters [A-Za-z0-9._:/-]"


def seq_problem(seq: int) -> str | None:
    """What is wrong with a batch's sequence number: it must be 1..MAX_SEQ."""
    if 1 <= seq <= MAX_SEQ:
        return None
    return f"seq {seq} is outside 1..{MAX_SEQ} (seq >= 1, at most 2^62)"


def ts_text(us: int) -> str:
    """Microseconds since the epoch as ISO text where Python can show it, else the raw number."""
    try:
        return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).strftime(
            "%Y-%m-%dT%H:%M:%S.%f"
        )
    except OverflowError:
        return f"{us} us since 1970-01-01"
