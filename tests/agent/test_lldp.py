"""The lldp and ibnetdiscover samplers on bad input: what they cannot read is counted by reason, never dropped
silently; a missing source is SourceUnavailable. (Real formats: tests/conformance/lldp, ibnetdiscover.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.utils import PcapWriter, rdpcap

from c4.agent.registry import SamplerContext, build_sampler
from c4.agent.sampler import SkipCounter, SkipReasons, SourceUnavailable

CORPUS = Path(__file__).parents[1] / "conformance"
CTX = SamplerContext(node="n1", job="", labels={})
MANPAGE = (CORPUS / "ibnetdiscover" / "rdma-core-manpage-example" / "topology.out").read_text()


def sample(name: str, options: dict) -> tuple[list[dict], object]:
    s = build_sampler(name, {"poll_every_ticks": 1, **options}, CTX)
    s.probe()
    rows = s.sample(0).get("fabric_neighbors", [])
    s.close()
    return rows, s


def test_lldpcli_json_that_is_not_json_or_lacks_a_port_is_counted(tmp_path):
    torn = tmp_path / "torn.json"
    torn.write_text(
        (CORPUS / "lldp" / "sonic-dbsyncd-0.9.6-interface-list" / "lldpctl.json").read_text()[:500]
    )
    rows, s = sample("lldp", {"path": str(torn)})
    assert rows == [] and s.skipped_by_reason == {"report_not_json": 1}
    assert isinstance(s, SkipCounter) and isinstance(s, SkipReasons) and s.records_skipped == 1
    no_port = tmp_path / "no_port.json"
    no_port.write_text(
        '{"lldp": {"interface": {"eth0": {"chassis": {"sw1": {"id": {"type": "mac", "value": "x"}}}}}}}'
    )
    rows, s = sample("lldp", {"path": str(no_port)})
    assert rows == [] and s.skipped_by_reason == {"neighbor_incomplete": 1}


def test_a_truncated_lldp_frame_is_counted_and_its_neighbours_kept(tmp_path):
    good = rdpcap(str(CORPUS / "lldp" / "pcap-catalyst9k-8023bt" / "8023bt.pcap"))[0]
    cut = tmp_path / "cut.pcap"
    with PcapWriter(str(cut), linktype=1) as w:
        w.write(bytes(good)[:20])  # Ethernet header and the start of the chassis TLV
        w.write(good)
    rows, s = sample("lldp", {"pcap": str(cut), "interfaces": ["eth0"]})
    assert [r["system_name"] for r in rows] == ["cisco-bt-switch"]
    assert s.skipped_by_reason == {"frame_undecodable": 1}


def test_ibnetdiscover_lines_it_cannot_read_are_counted_by_reason(tmp_path):
    lines = MANPAGE.splitlines()
    first_link = next(i for i, line in enumerate(lines) if line.strip().startswith("[22]"))
    broken = [*lines[:first_link], lines[first_link][:20], *lines[first_link + 1 :]]
    orphan = [lines[first_link]]  # a link line before any node line
    text = tmp_path / "t.out"
    text.write_text("\n".join(orphan + broken) + "\n")
    rows, s = sample("ibnetdiscover", {"path": str(text)})
    assert s.skipped_by_reason == {"link_line": 1, "link_outside_node": 1}
    assert len(rows) == 13  # the 14 links of the example but the broken one


def test_missing_sources_are_unavailable():
    with pytest.raises(SourceUnavailable):
        build_sampler("lldp", {"source": "lldpd", "command": ["no-such-lldpcli"]}, CTX).probe()
    with pytest.raises(SourceUnavailable):
        build_sampler("lldp", {"source": "frames", "interfaces": ["nosuchif0"]}, CTX).probe()
    with pytest.raises(SourceUnavailable):
        build_sampler("ibnetdiscover", {"command": ["no-such-ibnetdiscover"]}, CTX).probe()


def test_lldpd_that_does_not_answer_falls_back_to_frames(tmp_path):
    s = build_sampler("lldp", {"command": ["false"], "interfaces": ["nosuchif0"], "poll_every_ticks": 1}, CTX)
    s.probe()  # lldpcli (here `false`) exists: lldpd is asked first
    assert s.sample(0) == {}
    assert s.errors == 1
    assert s.mode == "lldpd"  # the frames could not be opened either: lldpd is asked again next time


def test_saved_reports_are_sent_every_poll_until_they_go(tmp_path):
    """A report that does not change still describes the fabric: its rows are sent every poll (else they
    would age out of the collector's freshness window); a removed report's rows stop."""
    reports = tmp_path / "switches"
    reports.mkdir()
    src = CORPUS / "lldp" / "sonic-dbsyncd-0.9.6-interface-list" / "lldpctl.json"
    (reports / "leaf7.json").write_text(src.read_text())
    s = build_sampler("lldp", {"reports_dir": str(reports), "poll_every_ticks": 1}, CTX)
    s.probe()
    first, second = s.sample(0)["fabric_neighbors"], s.sample(1)["fabric_neighbors"]
    assert first == second and {r["local_system"] for r in first} == {"leaf7"} and len(first) == 2
    (reports / "leaf7.json").unlink()
    assert s.sample(2) == {}
    ib = build_sampler("ibnetdiscover", {"path": str(tmp_path / "t.out"), "poll_every_ticks": 1}, CTX)
    (tmp_path / "t.out").write_text(MANPAGE)
    assert len(ib.sample(0)["fabric_neighbors"]) == 14 and len(ib.sample(1)["fabric_neighbors"]) == 14
    (tmp_path / "t.out").unlink()
    assert ib.sample(2) == {}
