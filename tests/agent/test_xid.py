"""Kernel-log Xid lines: modern, legacy and /dev/kmsg forms; malformed lines counted, never fatal."""

import pytest

from c4.agent.xid import describe, parse_xid_line
from c4.agent.xid_kmsg import KmsgXidSampler


@pytest.mark.parametrize(
    ("line", "xid", "bus"),
    [
        (
            "NVRM: Xid (PCI:0000:2b:00): 79, pid=1234, name=python, GPU has fallen off the bus.",
            79,
            "0000:2b:00.0",
        ),
        (
            "[ 8123.456789] NVRM: Xid (PCI:0000:9a:00): 48, pid=99, DBE (double bit error) ECC error",
            48,
            "0000:9a:00.0",
        ),
        (
            "6,1234,5678901,-;NVRM: Xid (PCI:0000:18:00): 119, pid=7, Timeout waiting for RPC from GSP",
            119,
            "0000:18:00.0",
        ),
        ("NVRM: Xid (0000:3b:00): 13, Graphics Exception: ESR 0x4041b0=0x3f", 13, "0000:3b:00.0"),
    ],
)
def test_parse_forms(line, xid, bus):
    parsed = parse_xid_line(line)
    assert parsed is not None and parsed.xid == xid and parsed.pci_bus_id == bus


def test_catalogue_covers_the_important_codes():
    for code, action in {
        13: "restart_job",
        31: "restart_job",
        43: "restart_job",
        48: "drain_node",
        63: "none",
        64: "replace_gpu",
        74: "check_link",
        79: "drain_node",
        92: "reset_gpu",
        94: "restart_job",
        95: "reset_gpu",
        119: "reset_gpu",
        120: "reset_gpu",
    }.items():
        assert describe(code).action == action, code
    assert describe(9999).category == "unknown" and describe(9999).action == "investigate"


def test_sampler_tails_a_log_file(tmp_path, caplog):
    log = tmp_path / "kern.log"
    log.write_text(
        "kernel: eth0: link up\n"
        "NVRM: Xid (PCI:0000:2b:00): 79, pid=1, GPU has fallen off the bus.\n"
        "NVRM: Xid (garbage here\n"
        "NVRM: Xid (PCI:0000:18:00): 74, pid=2, NVLink: fatal error detected on link 3\n"
    )
    s = KmsgXidSampler(log, from_start=True)
    s.probe()
    rows = s.sample(0)["gpu_events"]
    assert [(r["xid"], r["pci_bus_id"], r["source"], r["action"]) for r in rows] == [
        (79, "0000:2b:00.0", "kmsg", "drain_node"),
        (74, "0000:18:00.0", "kmsg", "check_link"),
    ]
    assert s.malformed == 1 and "unparsable Xid line" in caplog.text
    with open(log, "a") as f:
        f.write("NVRM: Xid (PCI:0000:5d:00): 120, pid=3, GSP task exception\n")
    assert [r["xid"] for r in s.sample(0)["gpu_events"]] == [120]


def test_missing_log_is_unavailable(tmp_path):
    from c4.agent.sampler import SourceUnavailable

    with pytest.raises(SourceUnavailable):
        KmsgXidSampler(tmp_path / "nope").probe()


def test_real_dev_kmsg_opens_nonblocking():
    import os
    from pathlib import Path

    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("no /dev/kmsg access in this sandbox")
    s = KmsgXidSampler(Path("/dev/kmsg"))
    s.probe()
    assert isinstance(s.sample(0)["gpu_events"], list)  # returns at once, nothing new
    s.close()
