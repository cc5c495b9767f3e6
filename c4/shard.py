"""Which collector an agent talks to: rendezvous (highest random weight) hashing of the node name.

Every agent ranks the same collector list by hash(node, collector); the first is its home, the next
ones its failover order. Adding or removing a collector moves only the nodes that ranked it first.
"""

from __future__ import annotations

import hashlib


def parse_collectors(value: str) -> list[str]:
    """'a:7070, b:7070' -> ['a:7070', 'b:7070'] (order kept, duplicates dropped)."""
    out: list[str] = []
    for part in value.split(","):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return out


def ordered_collectors(node: str, collectors: list[str]) -> list[str]:
    """The collectors in this node's preference order: home first, then failover."""

    def weight(address: str) -> int:
        return int.from_bytes(hashlib.blake2b(f"{node}\0{address}".encode(), digest_size=8).digest(), "big")

    return sorted(collectors, key=weight, reverse=True)
