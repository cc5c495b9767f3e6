"""FileTailer follows appends, partial lines, truncation and rotation."""

import os

from c4.agent.tail import DirectoryTailer, FileTailer


def test_partial_lines_held_until_complete(tmp_path):
    p = tmp_path / "log"
    p.write_text("a\nb")
    t = FileTailer(p)
    assert t.read_lines() == ["a"]
    with open(p, "a") as f:
        f.write("c\nd\n")
    assert t.read_lines() == ["bc", "d"]
    assert t.read_lines() == []


def test_truncation_restarts_from_zero(tmp_path):
    p = tmp_path / "log"
    p.write_text("one\ntwo\n")
    t = FileTailer(p)
    assert t.read_lines() == ["one", "two"]
    p.write_text("x\n")
    assert t.read_lines() == ["x"]
    assert t.stats.truncations == 1


def test_rotation_finishes_old_then_reads_new(tmp_path):
    p = tmp_path / "log"
    p.write_text("1\n")
    t = FileTailer(p)
    assert t.read_lines() == ["1"]
    with open(p, "a") as f:
        f.write("2\n")
    os.rename(p, tmp_path / "log.1")
    p.write_text("3\n")
    assert t.read_lines() == ["2", "3"]
    assert t.stats.rotations == 1


def test_start_at_end_and_oversized(tmp_path):
    p = tmp_path / "log"
    p.write_text("old\n")
    t = FileTailer(p, start_at_end=True, max_line_bytes=10)
    assert t.read_lines() == []
    with open(p, "a") as f:
        f.write("x" * 50 + "\nok\n")
    assert t.read_lines() == ["ok"]
    assert t.stats.oversized_lines == 1


def test_directory_tailer_picks_up_new_files(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.log").write_text("a1\n")
    dt = DirectoryTailer(d, "*.log")
    assert [line for _, line in dt.read_lines()] == ["a1"]
    (d / "b.log").write_text("b1\n")
    assert [(p.name, line) for p, line in dt.read_lines()] == [("b.log", "b1")]
