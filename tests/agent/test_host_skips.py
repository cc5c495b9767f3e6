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


def test_each_tick_reads_the_current_files_through_held_descriptors(tmp_path):
    """The proc files are kept open between ticks: a file rewritten in place, one replaced by another
    (rename), one grown past the size read last time and the real /proc all read as they are now."""
    (tmp_path / "stat").write_text("cpu  100 0 50 1000 5 0 0 0 0 0\nprocs_running 3\n")
    (tmp_path / "meminfo").write_text("MemTotal: 1000 kB\nMemAvailable: 400 kB\n")
    (tmp_path / "loadavg").write_text("0.50 0.40 0.30 1/100 42\n")
    s = HostSampler(tmp_path)
    first = s.sample(0)["host_memory"][0]
    assert (first["load1"], first["procs_running"], first["mem_available_bytes"]) == (0.5, 3, 400 * 1024)
    (tmp_path / "loadavg").write_text("1.50 0.40 0.30 1/100 42\n")  # in place
    new = tmp_path / "meminfo.new"
    new.write_text("MemTotal: 1000 kB\nMemAvailable: 300 kB\n")
    new.rename(tmp_path / "meminfo")  # a new file under the same name
    cpus = "".join(f"cpu{i} 1 0 1 10 0 0 0 0 0 0\n" for i in range(400))  # ~12 KiB: past the last read's size
    (tmp_path / "stat").write_text("cpu  100 0 50 1000 5 0 0 0 0 0\n" + cpus + "procs_running 7\n")
    out = s.sample(0)
    second = out["host_memory"][0]
    assert (second["load1"], second["procs_running"], second["mem_available_bytes"]) == (1.5, 7, 300 * 1024)
    assert len(out["host_cpu"]) == 401 and s.records_skipped == 0
    s.close()
    real = HostSampler("/proc")
    rows = [real.sample(0)["host_cpu"][0]["idle_s"] for _ in range(2)]
    assert rows[0] > 0 and rows[1] >= rows[0]
    real.close()
