"""The host sampler counts each /proc line it cannot read, in total and per reason (never drops it silently)."""

from __future__ import annotations

from pathlib import Path

from c4.agent.host import HostSampler

REAL_STAT = Path(__file__).parents[1] / "conformance" / "host" / "procfs-2014-stat" / "proc" / "stat"


def test_unreadable_lines_are_counted_per_reason(tmp_path):
    stat = REAL_STAT.read_text().replace("cpu3 47054", "cpu3 4x054")  # one damaged CPU line
    (tmp_path / "stat").write_text(stat)
    (tmp_path / "meminfo").write_text("MemTotal:       15666184 kB\nMemFree:   lots kB\n")
    (tmp_path / "loadavg").write_text("n/a\n")
    s = HostSampler(tmp_path)
    out = s.sample(0)
    assert {r["cpu"] for r in out["host_cpu"]} == {"all", "0", "1", "2", "4", "5", "6", "7"}
    assert s.skipped_by_reason == {"stat_line": 1, "meminfo_line": 1, "loadavg": 1}
    assert s.records_skipped == 3
    (mem,) = out["host_memory"]
    assert mem["mem_total_bytes"] == 15666184 * 1024 and mem["swap_used_bytes"] is None
