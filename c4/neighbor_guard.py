"""What a neighbour announces is not trusted: checks on fabric_neighbors rows, in the lldp and ibnetdiscover
samplers before rows leave the agent, and again (names and TTL) in the collector's fabric assembly.

LLDP and ibnetdiscover text comes from other machines (any switch, any host on the link). A row whose
identifying fields (``IDENTIFYING``: they name systems and ports and join the fabric) hold control
characters (C0, DEL, C1, line separators, bidi overrides) or exceed ``MAX_ID_CHARS`` is skipped and
counted; other text (descriptions, types, addresses) has its control characters replaced by U+FFFD and
is cut to ``MAX_TEXT_CHARS``, counted in ``amended``. A TTL outside 0..65535 (LLDP's TTL is a 16-bit
unsigned field, IEEE 802.1AB 8.5.4) is refused. Repeated neighbours of one poll become one row.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

#: C0 (tab too), DEL, C1, U+2028/2029 line separators, bidi embeddings/overrides and isolates.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: Fields that name a system or a port: never altered, so a row holding bad ones is skipped.
IDENTIFYING = ("local_system", "interface", "chassis_id", "system_name", "port_id", "neighbor_port")
#: Longest identifying field (802.1AB caps chassis id, port id and system name at 255 octets).
MAX_ID_CHARS = 255
#: Longest descriptive field kept; longer ones are cut (802.1AB caps a description at 255 octets).
MAX_TEXT_CHARS = 256
#: LLDP's TTL is 16 bits, unsigned.
MAX_TTL_S = 65535
#: What makes two rows of one poll the same neighbour on the same local port.
NEIGHBOR_KEY = ("local_system", "local_id", "interface", "chassis_id", "port_id")


def id_problem(row: dict[str, Any]) -> str | None:
    """The skip reason of a row whose identifying fields or TTL cannot be trusted, else None."""
    for name in IDENTIFYING:
        value = row.get(name)
        if not isinstance(value, str):
            continue
        if CONTROL.search(value):
            return "field_control_chars"
        if len(value) > MAX_ID_CHARS:
            return "field_too_long"
    ttl = row.get("ttl_s")
    if ttl is not None and not 0 <= ttl <= MAX_TTL_S:
        return "ttl_out_of_range"
    return None


def safe_text(value: str, amended: Counter) -> str:
    """Descriptive text with control characters replaced by U+FFFD and cut to MAX_TEXT_CHARS (counted)."""
    clean = CONTROL.sub("\ufffd", value)
    if clean != value:
        amended["control_chars_replaced"] += 1
    if len(clean) > MAX_TEXT_CHARS:
        amended["text_cut"] += 1
        clean = clean[:MAX_TEXT_CHARS]
    return clean


def guarded(row: dict[str, Any], skipped: Counter, amended: Counter) -> dict[str, Any] | None:
    """The row with its descriptive text made safe, or None (counted in ``skipped``) when it is refused."""
    problem = id_problem(row)
    if problem:
        skipped[problem] += 1
        return None
    return {
        k: safe_text(v, amended) if isinstance(v, str) and k not in IDENTIFYING else v for k, v in row.items()
    }


def unique_neighbors(rows: Iterable[dict[str, Any]], skipped: Counter) -> list[dict[str, Any]]:
    """One row per (local port, neighbour): the last one seen wins, the others count as duplicate_neighbor."""
    out: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = tuple(row.get(k) for k in NEIGHBOR_KEY)
        if key in out:
            skipped["duplicate_neighbor"] += 1
        out[key] = row
    return list(out.values())


def checked_rows(rows: Iterable[dict[str, Any]], skipped: Counter, amended: Counter) -> list[dict[str, Any]]:
    """Rows that pass ``guarded``, made safe, one per (local port, neighbour)."""
    kept = (g for g in (guarded(r, skipped, amended) for r in rows) if g is not None)
    return unique_neighbors(kept, skipped)
