"""Kernel-log Xid lines: modern, legacy and /dev/kmsg forms; malformed lines counted, never fatal."""

from pathlib import Path

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
        43: "none",  # NVIDIA: IGNORE (the application's fault; the GPU stays healthy)
        48: "drain_node",
        63: "none",
        64: "replace_gpu",
        74: "check_link",
        79: "drain_node",
        92: "none",  # NVIDIA: IGNORE
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


def test_missing_device_is_unavailable():
    from c4.agent.sampler import SourceUnavailable

    with pytest.raises(SourceUnavailable):
        KmsgXidSampler(Path("/dev/c4-no-such-kmsg")).probe()


def test_real_dev_kmsg_opens_nonblocking():
    import os
    from pathlib import Path

    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("no /dev/kmsg access in this sandbox")
    s = KmsgXidSampler(Path("/dev/kmsg"))
    s.probe()
    assert isinstance(s.sample(0)["gpu_events"], list)  # returns at once, nothing new
    s.close()


def _read_all(path, **kw):
    s = KmsgXidSampler(path, from_start=True, **kw)
    s.probe()
    out = s.sample(0)
    s.close()
    return s, out


def test_catalogue_is_nvidias_published_one():
    """Xid 38 and 145 (missing before) carry NVIDIA's description and resolution buckets verbatim."""
    x38, x145, x79 = describe(38), describe(145), describe(79)
    assert (x38.name, x38.immediate_action, x38.investigatory_action) == (
        "Driver firmware error",
        "IGNORE",
        "CONTACT_SUPPORT",
    )
    assert x38.mnemonic == "ROBUST_CHANNEL_FECS_ERR_WATCHDOG_TIMEOUT" and x38.category == "driver"
    assert (x145.name, x145.immediate_action, x145.action) == (
        "NVLINK: RLW Error",
        "WORKFLOW_NVLINK5_ERR",
        "check_link",
    )
    assert (x79.immediate_action, x79.action) == ("RESTART_BM", "drain_node")
    assert all(describe(code).category != "unknown" for code in (121, 140, 143, 154, 158, 172))


@pytest.mark.parametrize(
    ("lines", "bus"),
    [
        # open-gpu-kernel-modules' NV_DEV_PRINTF prefix "NVRM: GPU %04x:%02x:%02x.%x: " (osinit.c)
        (["NVRM: GPU 0000:01:00.0: GPU has fallen off the bus."], "0000:01:00.0"),
        # the older prefix "NVRM: GPU at PCI:%04x:%02x:%02x: "
        (["[ 90.1] NVRM: GPU at PCI:0000:65:00: GPU has fallen off the bus."], "0000:65:00.0"),
        (["[   49.261458] NVRM: GPU at 0000:01:00.0 has fallen off the bus."], "0000:01:00.0"),
        (
            [
                "[ 1843.308145] NVRM: The NVIDIA GPU 0000:b3:00.0",
                "               NVRM: (PCI ID: 10de:26b5) installed in this system has",
                "               NVRM: fallen off the bus and is not responding to commands.",
            ],
            "0000:b3:00.0",
        ),
        (
            [
                "NVRM: The NVIDIA GPU 0000:05:00.0 (PCI ID: 10de:2203) installed in this system has",
                "NVRM: fallen off the bus and is not responding to commands.",
            ],
            "0000:05:00.0",
        ),
    ],
)
def test_fallen_off_the_bus_without_an_xid_is_a_lost_gpu(tmp_path, lines, bus):
    log = tmp_path / "kern.log"
    log.write_text("\n".join(lines) + "\n")
    s, out = _read_all(log)
    (row,) = out["gpu_events"]
    assert (row["kind"], row["pci_bus_id"], row["xid"], row["action"]) == (
        "gpu_lost",
        bus,
        None,
        "drain_node",
    )
    assert s.records_skipped == 0


def test_probe_message_needs_its_end_within_two_lines(tmp_path):
    log = tmp_path / "kern.log"
    log.write_text(
        "NVRM: The NVIDIA GPU 0000:b3:00.0\n"
        "NVRM: (PCI ID: 10de:26b5) installed in this system has\n"
        "NVRM: something else\n"
        "NVRM: fallen off the bus and is not responding to commands.\n"
    )
    assert _read_all(log)[1]["gpu_events"] == []


def test_kmsg_record_with_escaped_newlines_is_split_into_lines():
    """/dev/kmsg keeps a multi-line printk as one record with \\x0a escapes and KEY=value lines after it."""
    from c4.agent.kernel_log import KernelLogParser
    from c4.agent.xid_kmsg import record_lines

    rec = (
        b"3,1234,1843308145,-;NVRM: The NVIDIA GPU 0000:b3:00.0\\x0aNVRM: (PCI ID: 10de:26b5) installed"
        b" in this system has\\x0aNVRM: fallen off the bus and is not responding to commands.\\x0a\n"
        b" SUBSYSTEM=pci\n DEVICE=+pci:0000:b3:00.0\n"
    )
    lines = record_lines(rec)
    assert lines[0] == "NVRM: The NVIDIA GPU 0000:b3:00.0" and len(lines) == 4
    p = KernelLogParser()
    rows = [r for line in lines for r in p.feed(line)]
    assert [(t, r["kind"], r["pci_bus_id"]) for t, r in rows] == [("gpu_events", "gpu_lost", "0000:b3:00.0")]


def test_sxid_lines_are_nvswitch_events(tmp_path):
    log = tmp_path / "kern.log"
    log.write_text(
        "nvidia-nvswitch1: SXid (PCI:0000:84:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error (First)\n"
        "nvidia-nvswitch1: SXid (PCI:0000:84:00.0): 12028, Severity 0 Engine instance 32 Sub-engine instance 00\n"
        "nvidia-nvswitch1: SXid (PCI:0000:84:00.0): 12028, Data {0x000001c0, 0x00bd5c8a}\n"
        "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 24007, Fatal, Link 18 sourcetrack TCEN0 crumbstore ECC DBE Error\n"
        "nvidia-nvswitch0: SXid (garbage\n"
    )
    s, out = _read_all(log)
    rows = [
        (r["switch_device"], r["pci_bus_id"], r["sxid"], r["severity"], r["link"])
        for r in out["nvswitch_events"]
    ]
    assert rows == [
        ("nvidia-nvswitch1", "0000:84:00.0", 12028, "Non-fatal", 32),
        ("nvidia-nvswitch0", "0000:05:00.0", 24007, "Fatal", 18),
    ]
    assert s.skipped_by_reason == {"malformed_sxid": 1} and s.records_skipped == 1
    assert s.parser.sxid_detail_lines == 2
    assert "nvswitch_events" in s.tables


def test_uuid_line_names_the_gpu_of_the_following_xids(tmp_path):
    log = tmp_path / "kern.log"
    log.write_text(
        "NVRM: GPU at PCI:0000:07:00: GPU-fb51809b-350a-99db-67b5-e16fc6d498ab\n"
        "NVRM: Xid (PCI:0000:07:00): 38, pid=326, name=modprobe, channel 0x00000003 0000c597 00000000 00000000\n"
        "NVRM: Xid (PCI:0000:08:00): 13, pid=1, Graphics Exception\n"
    )
    rows = _read_all(log)[1]["gpu_events"]
    assert [(r["xid"], r["gpu_uuid"]) for r in rows] == [
        (38, "GPU-fb51809b-350a-99db-67b5-e16fc6d498ab"),
        (13, ""),
    ]


def test_a_log_file_that_appears_later_is_read_from_its_start(tmp_path):
    """Under the default startup policy a missing log file is waited for, not given up on."""
    from c4.agent.registry import SamplerSettings
    from c4.agent.runner import ScheduledSampler

    log = tmp_path / "later" / "kern.log"
    s = KmsgXidSampler(log)  # from_start left False: a file that did not exist holds only new lines
    sched = ScheduledSampler(s, 1.0, SamplerSettings().startup)  # the default policy, ignore
    assert sched.probe() is True and sched.state == "running" and s.waiting
    assert s.sample(0)["gpu_events"] == []
    log.parent.mkdir()
    log.write_text("NVRM: Xid (PCI:0000:2b:00): 79, pid=1, GPU has fallen off the bus.\n")
    assert [r["xid"] for r in s.sample(0)["gpu_events"]] == [79] and not s.waiting
    with open(log, "a") as f:
        f.write("NVRM: Xid (PCI:0000:2b:00): 48, pid=1, DBE\n")
    assert [r["xid"] for r in s.sample(0)["gpu_events"]] == [48]


def test_agent_test_reads_a_kmsg_file_given_on_the_command_line(tmp_path, capsys):
    import argparse

    from c4.agent import cli

    log = tmp_path / "dmesg.log"
    log.write_text("[ 1.0] NVRM: Xid (PCI:0000:2b:00): 79, pid=1, GPU has fallen off the bus.\n")
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    args = parser.parse_args(["--test", "--samplers", "xid_kmsg", "--kmsg-path", str(log)])
    assert cli.agent_config(args).samplers["xid_kmsg"]["from_start"] is True
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert "sampler xid_kmsg: 1 rows" in out and "0000:2b:00.0" in out
