"""Issue 15 item 15: text with invalid UTF-8 is decoded with replacement, never dropped; a huge file
is streamed, at most a bounded number of bytes per tick, continuing on the next tick."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

from c4.agent.nccl_inspector import InspectorSampler
from c4.agent.sysfs import read_text
from c4.agent.tail import DirectoryTailer, FileTailer
from c4.agent.xid_kmsg import KmsgXidSampler

DATA = Path(__file__).resolve().parents[1] / "data" / "nccl"
ROW = json.loads((DATA / "inspector-rank2.log").read_text().splitlines()[0])


def test_xid_line_with_invalid_utf8_is_kept(tmp_path):
    log = tmp_path / "kern.log"
    log.write_bytes(
        b"NVRM: Xid (PCI:0000:2b:00): 79, pid=1234, name=tr\xe4ining, GPU has fallen off the bus.\n"
    )
    s = KmsgXidSampler(log, from_start=True)
    s.probe()
    rows = s.sample(0)["gpu_events"]
    assert [r["xid"] for r in rows] == [79] and "name=tr\ufffdining" in rows[0]["message"]


def test_tailer_and_sysfs_decode_with_replacement(tmp_path):
    f = tmp_path / "a.log"
    f.write_bytes(b"ok\n\xff\xfebad\nfine\n")
    t = FileTailer(f)
    assert t.read_lines() == ["ok", "\ufffd\ufffdbad", "fine"] and t.stats.undecodable_lines == 1
    (tmp_path / "fw_ver").write_bytes(b"28.\xff\n")
    assert read_text(tmp_path / "fw_ver") == "28.\ufffd"


def test_512_mib_file_is_read_a_bounded_slice_per_tick(tmp_path):
    d = tmp_path / "dump"
    d.mkdir()
    big = d / "huge.log"
    with open(big, "wb") as f:
        f.truncate(512 << 20)  # sparse: 512 MiB of NULs, no newline, costs no disk
    (d / "rank2.log").write_text(json.dumps(ROW) + "\n")
    s = InspectorSampler(d)
    s.probe()
    tracemalloc.start()
    try:
        rows = s.sample(0)["nccl_collectives"]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"one tick allocated {peak >> 20} MiB"
    read = sum(t._offset for t in s.tailer.tailers.values())
    assert 0 < read <= s.max_bytes_per_tick
    for _ in range(3):
        rows += s.sample(0)["nccl_collectives"]
    assert [r["coll_sn"] for r in rows] == [1407]  # the small file is not starved by the big one


def test_backlog_over_the_budget_arrives_whole_over_several_ticks(tmp_path):
    d = tmp_path / "dump"
    d.mkdir()
    lines = [json.dumps({**ROW, "coll_perf": {**ROW["coll_perf"], "coll_sn": i}}) for i in range(3000)]
    (d / "rank2.log").write_text("\n".join(lines) + "\n")
    s = InspectorSampler(d, max_bytes_per_tick=64 << 10)
    s.probe()
    got, ticks = [], 0
    while len(got) < 3000 and ticks < 1000:
        got += [r["coll_sn"] for r in s.sample(0)["nccl_collectives"]]
        ticks += 1
    assert got == list(range(3000)) and ticks >= os.path.getsize(d / "rank2.log") // (64 << 10)


def test_directory_tailer_budget_is_shared_fairly(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.log").write_text("".join(f"{name}{i}\n" for i in range(10_000)))
    t = DirectoryTailer(tmp_path, "*.log")
    seen = {"a": 0, "b": 0}
    for _ in range(4):
        for path, _line in t.read_lines(max_bytes=16 << 10):
            seen[path.stem] += 1
    assert seen["a"] > 0 and seen["b"] > 0 and sum(seen.values()) < 20_000
