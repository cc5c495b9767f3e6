"""Fabric assembly against rows an older or hostile agent sends unchecked (inputs we wrote, not conformance
artifacts): a row naming a system or port with control characters, or a TTL outside 16 bits, builds no
cable and is counted in Discovery.skipped."""

from __future__ import annotations

import pytest

from c4.traffic.discovery import assemble


def row(local: str, itf: str, remote: str, port: str, ttl: int | None = 120) -> dict:
    """A fabric_neighbors row as an agent sends it (the fields assembly reads)."""
    return {
        "source": "lldpd",
        "local_system": local,
        "interface": itf,
        "system_name": remote,
        "chassis_id": "aa",
        "neighbor_port": port,
        "neighbor_kind": "switch",
        "ttl_s": ttl,
        "ts": None,
    }


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (row("h1", "eth0", "leaf\x1b[2J", "E1"), "field_control_chars"),
        (row("h1", "eth0\n", "leaf", "E1"), "field_control_chars"),
        (row("h1", "eth0", "leaf", "E\u202e1"), "field_control_chars"),
        (row("h\x00", "eth0", "leaf", "E1"), "field_control_chars"),
        (row("h1", "eth0", "l" * 300, "E1"), "field_too_long"),
        (row("h1", "eth0", "leaf", "E1", ttl=-5), "ttl_out_of_range"),
    ],
)
def test_rows_with_unsafe_names_build_no_cable_and_are_counted(bad, reason):
    found = assemble([bad, row("h2", "eth0", "leaf", "E2")])
    assert found.cables() == {(("h2", "eth0"), ("leaf", "E2"))}
    assert dict(found.skipped) == {reason: 1}
    assert all(s.isprintable() for s in found.roles)


def test_clean_rows_are_not_counted():
    found = assemble([row("h1", "eth0", "leaf", "E1", ttl=None)])
    assert len(found.links) == 1 and not found.skipped
