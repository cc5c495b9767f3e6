"""The lldp and ibnetdiscover samplers against hostile neighbours (inputs we wrote, after a tester's: not
conformance artifacts): control characters in names are refused, descriptions made safe and bounded,
TTLs outside 16 bits refused, repeats collapsed, and every frame or record left out counted by reason."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.contrib.lldp import (
    LLDPDU,
    LLDPDUChassisID,
    LLDPDUEndOfLLDPDU,
    LLDPDUPortID,
    LLDPDUSystemDescription,
    LLDPDUSystemName,
    LLDPDUTimeToLive,
)
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from c4.agent import lldp, lldp_frame
from c4.agent.registry import SamplerContext, build_sampler
from c4.neighbor_guard import MAX_TEXT_CHARS

CORPUS = Path(__file__).parents[1] / "conformance"
CTX = SamplerContext(node="n1", job="", labels={})
MANPAGE = (CORPUS / "ibnetdiscover" / "rdma-core-manpage-example" / "topology.out").read_text()
LLDP_DST = "01:80:c2:00:00:0e"


def sample(name: str, options: dict) -> tuple[list[dict], object]:
    """One poll of a sampler built from options: its rows and the sampler."""
    s = build_sampler(name, {"poll_every_ticks": 1, **options}, CTX)
    s.probe()
    rows = s.sample(0).get("fabric_neighbors", [])
    s.close()
    return rows, s


def frame(name: str = "leaf0", chassis: str = "00:11:22:33:44:55", port: str = "Ethernet1", **kw) -> Ether:
    """An LLDP frame built with scapy: chassis (mac), port (ifname), TTL, system name and description."""
    return (
        Ether(dst=LLDP_DST, src="00:11:22:33:44:55", type=0x88CC)
        / LLDPDU()
        / LLDPDUChassisID(subtype=7, id=chassis)
        / LLDPDUPortID(subtype=5, id=port)
        / LLDPDUTimeToLive(ttl=kw.get("ttl", 120))
        / LLDPDUSystemName(system_name=name)
        / LLDPDUSystemDescription(description=kw.get("descr", "SONiC"))
        / LLDPDUEndOfLLDPDU()
    )


def pcap_sample(tmp_path: Path, frames: list) -> tuple[list[dict], object]:
    """The lldp sampler's rows from a pcap holding ``frames``."""
    path = tmp_path / "f.pcap"
    wrpcap(str(path), frames, linktype=1)
    return sample("lldp", {"pcap": str(path), "interfaces": ["eth0"]})


def report(tmp_path: Path, interfaces: dict) -> Path:
    """A lldpcli json report of neighbours ``{interface: (system name, chassis id, port id, descr, ttl)}``."""
    doc = {
        "lldp": {
            "interface": [
                {
                    name: {
                        "chassis": {sysname: {"id": {"type": "mac", "value": cid}, "descr": descr}},
                        "port": {"id": {"type": "ifname", "value": pid}, "ttl": ttl},
                    }
                }
                for name, (sysname, cid, pid, descr, ttl) in interfaces.items()
            ]
        }
    }
    path = tmp_path / "n.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "neighbour",
    [
        ("eth0\n$(id)", "sw", "Eth1"),
        ("eth0", "sw\x1b[2J", "Eth1"),
        ("eth0", "sw\u202e", "Eth1"),
        ("eth0", "sw\u2066", "Eth1"),
        ("eth0", "sw\x85", "Eth1"),
        ("eth0", "sw\x7f", "Eth1"),
        ("eth0", "sw", "Eth\x001"),
    ],
)
def test_lldpd_neighbour_with_control_characters_in_a_name_is_skipped_and_counted(tmp_path, neighbour):
    interface, sysname, port = neighbour
    path = report(
        tmp_path,
        {interface: (sysname, "00:11:22:33:44:55", port, "x", "120"), "eth9": ("ok", "a", "b", "", "1")},
    )
    rows, s = sample("lldp", {"path": str(path)})
    assert [r["system_name"] for r in rows] == ["ok"]
    assert s.skipped_by_reason == {"field_control_chars": 1}


def test_lldpd_descriptions_are_made_safe_and_cut_with_a_count(tmp_path):
    path = report(tmp_path, {"eth0": ("sw", "00:11", "Eth1", "\x1b[2J\u202e" + "x" * 100_000, "120")})
    rows, s = sample("lldp", {"path": str(path)})
    (row,) = rows
    assert len(row["system_descr"]) == MAX_TEXT_CHARS
    assert row["system_descr"].startswith("\ufffd[2J\ufffdxxx") and row["system_descr"].isprintable()
    assert s.amended_by_reason == {"control_chars_replaced": 1, "text_cut": 1}
    assert s.records_skipped == 0


@pytest.mark.parametrize(("ttl", "kept"), [("-5", False), ("65536", False), ("65535", True), ("0", True)])
def test_lldpd_ttl_outside_16_bits_is_refused(tmp_path, ttl, kept):
    path = report(tmp_path, {"eth0": ("sw", "00:11", "Eth1", "", ttl)})
    rows, s = sample("lldp", {"path": str(path)})
    assert [r["ttl_s"] for r in rows] == ([int(ttl)] if kept else [])
    assert s.skipped_by_reason == ({} if kept else {"ttl_out_of_range": 1})


def test_lldpd_non_object_entries_and_null_are_counted(tmp_path):
    path = tmp_path / "l.json"
    path.write_text(json.dumps({"lldp": [1, "x", None]}))
    assert sample("lldp", {"path": str(path)})[1].skipped_by_reason == {"entry_not_object": 3}
    path.write_text(json.dumps({"lldp": None}))
    assert sample("lldp", {"path": str(path)})[1].skipped_by_reason == {"entry_not_object": 1}


def test_lldpd_report_over_the_limit_is_too_large_not_unparsable(tmp_path, monkeypatch):
    path = report(tmp_path, {f"eth{i}": ("sw", "00:11", f"Eth{i}", "", "120") for i in range(50)})
    monkeypatch.setattr(lldp, "MAX_REPORT_BYTES", path.stat().st_size - 1)
    rows, s = sample("lldp", {"path": str(path)})
    assert rows == [] and s.skipped_by_reason == {"report_too_large": 1}
    monkeypatch.setattr(lldp, "MAX_REPORT_BYTES", path.stat().st_size)
    assert len(sample("lldp", {"path": str(path)})[0]) == 50


def test_lldpd_repeated_neighbour_gives_one_row(tmp_path):
    block = {
        "eth0": {
            "chassis": {"sw": {"id": {"type": "mac", "value": "aa"}}},
            "port": {"id": {"type": "ifname", "value": "E1"}},
        }
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"lldp": {"interface": [block, block, block]}}))
    rows, s = sample("lldp", {"path": str(path)})
    assert len(rows) == 1 and s.skipped_by_reason == {"duplicate_neighbor": 2}


def test_frame_names_with_control_characters_are_skipped_descriptions_made_safe(tmp_path):
    rows, s = pcap_sample(
        tmp_path,
        [
            frame(chassis="sw\n$(id)\x1b[2J"),
            frame(name="leaf\x000", port="Ethernet2"),
            frame(port="Ethernet3", descr="os\x1b]0;pwned\x07" + "y" * 300),
        ],
    )
    (row,) = rows
    assert row["port_id"] == "Ethernet3" and row["system_descr"].startswith("os\ufffd]0;pwned\ufffdyyy")
    assert len(row["system_descr"]) == MAX_TEXT_CHARS
    assert s.skipped_by_reason == {"field_control_chars": 2}
    assert s.amended_by_reason == {"control_chars_replaced": 1, "text_cut": 1}


def test_repeated_frames_give_one_row_per_port_and_neighbour(tmp_path):
    rows, s = pcap_sample(tmp_path, [frame()] * 3 + [frame(port="Ethernet2")])
    assert sorted(r["port_id"] for r in rows) == ["Ethernet1", "Ethernet2"]
    assert s.skipped_by_reason == {"duplicate_neighbor": 2}


def test_a_huge_capture_is_read_only_up_to_the_limits_and_the_rest_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(lldp_frame, "MAX_PCAP_FRAMES", 5)
    rows, s = pcap_sample(tmp_path, [frame(port=f"Ethernet{i}") for i in range(8)])
    assert len(rows) == 5 and s.skipped_by_reason == {"frame_over_limit": 3}
    monkeypatch.setattr(lldp_frame, "MAX_PCAP_BYTES", 24 + 3 * (16 + len(frame())))
    rows, s = pcap_sample(tmp_path, [frame(port=f"Ethernet{i}") for i in range(8)])
    assert len(rows) == 3 and s.skipped_by_reason == {"capture_over_limit": 1}


def test_vlan_tagged_lldp_frame_is_decoded(tmp_path):
    tagged = Ether(dst=LLDP_DST, src="00:11:22:33:44:55") / Dot1Q(vlan=5, type=0x88CC) / frame()[LLDPDU]
    rows, s = pcap_sample(tmp_path, [tagged])
    assert [(r["system_name"], r["port_id"]) for r in rows] == [("leaf0", "Ethernet1")]
    assert s.skipped_by_reason == {}


def test_frames_that_are_not_lldp_are_counted(tmp_path):
    other = Ether(dst="00:00:00:00:00:01") / IP(dst="10.0.0.1") / UDP(dport=4791) / Raw(b"x" * 50)
    rows, s = pcap_sample(tmp_path, [other, other, frame()])
    assert len(rows) == 1 and s.skipped_by_reason == {"not_lldp": 2}


def test_a_truncated_last_frame_is_counted_and_scapy_stays_quiet(tmp_path, caplog):
    path = tmp_path / "t.pcap"
    wrpcap(str(path), [frame(port="Ethernet1"), frame(port="Ethernet2")], linktype=1)
    path.write_bytes(path.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING):
        rows, s = sample("lldp", {"pcap": str(path)})
    assert [r["port_id"] for r in rows] == ["Ethernet1"]
    assert s.skipped_by_reason == {"frame_truncated": 1}
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]


def test_ibnetdiscover_names_with_control_characters_are_skipped_and_repeats_collapsed(tmp_path):
    clean, _ = sample("ibnetdiscover", {"path": _write(tmp_path, MANPAGE)})
    hostile = MANPAGE.replace('# "MT23108 InfiniHost Mellanox Technologies"', '# "h\x1b[2J mlx4_0"', 1)
    assert hostile != MANPAGE
    rows, s = sample("ibnetdiscover", {"path": _write(tmp_path, hostile + MANPAGE)})
    # the hostile copy's link is skipped; the clean copy's same link stands, every other one repeats
    assert s.skipped_by_reason == {"field_control_chars": 1, "duplicate_neighbor": len(rows) - 1}
    assert all(r["system_descr"].isprintable() and r["local_system"].isprintable() for r in rows)
    assert len(rows) == len(clean)


def test_an_empty_ibnetdiscover_file_is_counted(tmp_path):
    rows, s = sample("ibnetdiscover", {"path": _write(tmp_path, " \n")})
    assert rows == [] and s.skipped_by_reason == {"report_empty": 1}


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "topology.out"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("flag", "source", "named"),
    [
        ("--lldp-json", "/nonexistent.json", "/nonexistent.json"),
        ("--ibnetdiscover", "DIR", "DIR"),
        ("--lldp-pcap", "EMPTY", "EMPTY"),
    ],
)
def test_agent_test_with_an_unreadable_source_file_names_it_and_fails(tmp_path, flag, source, named):
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    paths = {"DIR": str(tmp_path), "EMPTY": str(empty)}
    sampler = "ibnetdiscover" if flag == "--ibnetdiscover" else "lldp"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "c4.cli",
            "agent",
            "--test",
            "--samplers",
            sampler,
            flag,
            paths.get(source, source),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stdout
    assert f"## sampler {sampler}: ERROR source not readable" in out.stdout
    assert paths.get(named, named) in out.stdout


class FakeSocket:
    """Hands out the given frames, then stops the listener."""

    def __init__(self, frames: list[bytes], listener: lldp_frame.FrameListener) -> None:
        self.frames, self.listener = list(frames), listener

    def __enter__(self) -> FakeSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def recv(self, _size: int) -> bytes:
        """The next frame; the last call stops the listener."""
        if not self.frames:
            self.listener._stop.set()
            raise TimeoutError
        return self.frames.pop(0)


def test_live_frames_with_control_characters_are_skipped_descriptions_made_safe():
    listener = lldp_frame.FrameListener(["eth0"], "n1")
    frames = [bytes(frame(name="evil\x1b[2J")), bytes(frame(descr="d\u202e" + "z" * 400))]
    listener._read("eth0", FakeSocket(frames, listener))
    (row,) = listener.rows()
    assert row["system_name"] == "leaf0" and row["system_descr"].startswith("d\ufffdzzz")
    assert len(row["system_descr"]) == MAX_TEXT_CHARS
    assert dict(listener.skipped_by_reason) == {"field_control_chars": 1}
    assert dict(listener.amended_by_reason) == {"control_chars_replaced": 1, "text_cut": 1}
