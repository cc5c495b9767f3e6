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


def test_directory_tailer_reads_a_file_renamed_to_a_matching_name_once(tmp_path):
    """A writer rotating x.jsonl -> x.1.jsonl: the glob matches both names, each line is read once."""
    d = tmp_path / "d"
    d.mkdir()
    p = d / "x.jsonl"
    p.write_text("1\n2")
    dt = DirectoryTailer(d, "*.jsonl")
    assert [line for _, line in dt.read_lines()] == ["1"]
    with open(p, "a") as f:
        f.write("\n3\n")
    os.rename(p, d / "x.1.jsonl")
    p.write_text("4\n")
    assert sorted(line for _, line in dt.read_lines()) == ["2", "3", "4"]
    with open(d / "x.1.jsonl", "a") as f:  # the writer still held the old file
        f.write("5\n")
    assert [line for _, line in dt.read_lines()] == ["5"]
    assert dt.read_lines() == []


def test_directory_tailer_rename_noticed_by_the_old_name_first(tmp_path):
    """The old name's tailer saw the rotation (and read the old file to its end) before the new name was found."""
    d = tmp_path / "d"
    d.mkdir()
    p = d / "x.jsonl"
    p.write_text("1\n")
    dt = DirectoryTailer(d, "*.jsonl")
    assert [line for _, line in dt.read_lines()] == ["1"]
    with open(p, "a") as f:
        f.write("2\n")
    os.rename(p, d / "x.old")  # not matched yet: only the old name's tailer follows it
    p.write_text("3\n")
    assert [line for _, line in dt.read_lines()] == ["2", "3"]
    os.rename(d / "x.old", d / "x.1.jsonl")  # now under a matching name
    with open(d / "x.1.jsonl", "a") as f:
        f.write("late\n")
    assert [line for _, line in dt.read_lines()] == ["late"]


def test_directory_tailer_first_scan_reads_every_file(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.1.jsonl").write_text("old\n")
    (d / "x.jsonl").write_text("new\n")
    dt = DirectoryTailer(d, "*.jsonl")
    assert sorted(line for _, line in dt.read_lines()) == ["new", "old"]
