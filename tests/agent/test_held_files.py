"""HeldFiles: counter files kept open and re-read with pread, never returning a stale or wrong value."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from c4.agent.sysfs import HeldFiles, read_counter


def fds_under(directory) -> int:
    """This process's open descriptors on files in ``directory`` (other threads' sockets and pipes,
    e.g. a gRPC channel an earlier test left closing, do not count)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor among them)
            continue
        count += target.startswith(f"{directory}/")
    return count


def test_a_rewritten_file_is_read_anew(tmp_path):
    """In place (same inode) or replaced by rename (the twin's way): the next read has the new value."""
    f = tmp_path / "rx_bytes"
    f.write_text("10\n")
    files = HeldFiles()
    assert files.read_counter(str(f)) == 10
    f.write_text("11\n")  # same inode, new content
    assert files.read_counter(str(f)) == 11
    tmp = tmp_path / "tmp"
    tmp.write_text("12\n")
    os.replace(tmp, f)  # a new inode under the same path
    assert files.read_counter(str(f)) == 12
    files.close()


def test_missing_unreadable_and_odd_files_read_as_none(tmp_path):
    """A file that disappears, a directory, a FIFO, and text that is not a counter: None, never a raise."""
    f = tmp_path / "c"
    f.write_text("5")
    files = HeldFiles()
    assert files.read_counter(str(f)) == 5
    f.unlink()
    assert files.read_counter(str(f)) is None
    assert files.read_counter(str(tmp_path)) is None
    os.mkfifo(tmp_path / "fifo")
    assert files.read_counter(str(tmp_path / "fifo")) is None  # refused at once, no blocking open
    (tmp_path / "na").write_text("N/A (no PMA)\n")
    assert files.read_counter(str(tmp_path / "na")) is None
    assert files.read_text(str(tmp_path / "na")) == "N/A (no PMA)"
    files.close()


def test_at_most_max_open_descriptors_are_held(tmp_path):
    """Past max_open, files are still read correctly, opened and closed per read."""
    paths = []
    for i in range(5):
        (tmp_path / f"c{i}").write_text(str(i))
        paths.append(str(tmp_path / f"c{i}"))
    files = HeldFiles(max_open=2)
    before = fds_under(tmp_path)
    assert [files.read_counter(p) for p in paths] == [0, 1, 2, 3, 4]
    assert [files.read_counter(p) for p in paths] == [0, 1, 2, 3, 4]
    assert fds_under(tmp_path) - before == 2
    files.close()
    assert fds_under(tmp_path) == before


LO_TX = Path("/sys/class/net/lo/statistics/tx_packets")


@pytest.mark.skipif(not LO_TX.is_file(), reason="no sysfs loopback statistics on this machine")
def test_a_held_sysfs_descriptor_reads_the_current_value():
    """On real sysfs the descriptor is held (no stat per read) and pread from 0 gets the kernel's new value."""
    files = HeldFiles()
    first = files.read_counter(str(LO_TX))
    assert first is not None and first == read_counter(str(LO_TX))
    assert files._held[str(LO_TX)][1] is None  # on sysfs: no inode check
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(20):
            s.sendto(b"x", ("127.0.0.1", 9))
    later = files.read_counter(str(LO_TX))
    assert later >= first + 20
    files.close()


def test_dropped_samplers_give_their_descriptors_back(tmp_path):
    """A HeldFiles dropped without close() closes its descriptors (the twin runs many samplers in one process)."""
    import gc

    (tmp_path / "c").write_text("1")
    before = fds_under(tmp_path)
    for _ in range(50):
        files = HeldFiles()
        assert files.read_counter(str(tmp_path / "c")) == 1
        del files
    gc.collect()
    assert fds_under(tmp_path) == before


def _age(path, seconds: float) -> None:
    """Date a directory's mtime back (as an untouched fixture tree is)."""
    t = os.stat(path).st_mtime - seconds
    os.utime(path, (t, t))


def test_passes_look_at_a_directory_once_and_still_see_every_replaced_file(tmp_path, monkeypatch):
    """Within passes, a file in an unchanged directory is read without a stat of its own; a file renamed
    over, even while another pass read only its neighbours (slow counters), is read anew."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("1\n")
    b.write_text("100\n")
    _age(tmp_path, 10)
    files = HeldFiles()
    files.new_pass()
    assert files.read_counter(str(a)) == 1 and files.read_counter(str(b)) == 100
    stats = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *args, **kw: stats.append(str(p)) or real_stat(p, *args, **kw))
    files.new_pass()
    assert files.read_counter(str(a)) == 1 and files.read_counter(str(b)) == 100
    assert stats == [str(tmp_path)]  # the directory once, neither file
    b.write_text("101\n")  # in place: the held descriptor reads it
    files.new_pass()
    assert files.read_counter(str(b)) == 101
    tmp = tmp_path / "tmp"
    tmp.write_text("2\n")
    os.replace(tmp, a)  # a new inode, while this pass reads only b
    assert files.read_counter(str(b)) == 101
    files.new_pass()
    assert files.read_counter(str(a)) == 2
    files.close()


@pytest.mark.parametrize("on_sysfs", [False, True])
def test_read_counters_gives_what_read_counter_gives_file_by_file(tmp_path, on_sysfs):
    """The one-loop reader of many counters: fresh values through held descriptors (in place, replaced,
    over several passes), None for what read_counter refuses; as if on sysfs (no inode checks) or not."""
    names = ["a", "b", "na", "neg", "big", "gone"]
    for name, text in zip(names, ["1\n", "2\n", "N/A (no PMA)\n", "-1\n", f"{2**64}\n", "9\n"], strict=True):
        (tmp_path / name).write_text(text)
    paths = [str(tmp_path / n) for n in names] + [str(tmp_path / "never")]
    files = HeldFiles(in_place=frozenset({os.stat(tmp_path).st_dev}) if on_sysfs else frozenset())
    for _ in range(2):
        files.new_pass()
        assert files.read_counters(paths) == [1, 2, None, None, None, 9, None]
    (tmp_path / "a").write_text("3\n")  # in place
    (tmp_path / "tmp").write_text("4\n")
    os.replace(tmp_path / "tmp", tmp_path / "b")  # a new file under the name
    (tmp_path / "gone").unlink()
    files.new_pass()
    got = files.read_counters(paths)
    assert got[0] == 3 and got[2:5] == [None, None, None] and got[6] is None
    if not on_sysfs:  # off sysfs a replaced or removed file is noticed; sysfs files are never replaced
        assert got[1] == 4 and got[5] is None
    assert got == [files.read_counter(p) for p in paths]
    files.close()


def test_procfs_files_are_read_as_sysfs_files_are(tmp_path):
    """/proc's files are regenerated on every read and never replaced: held with no inode to check (no
    stat before each read), and a held /proc/self/stat still reads the current value."""
    files = HeldFiles()
    first = files.read_bytes("/proc/self/stat", 4096)
    fd, ino, _ = files._held["/proc/self/stat"]
    assert ino is None  # read through the descriptor alone, as a sysfs file
    utime_before = int(first.rsplit(b")", 1)[1].split()[11])
    deadline = os.times().elapsed + 10
    while os.times().elapsed < deadline:  # burn CPU until the kernel's tick counter moves
        sum(range(100_000))
        again = files.read_bytes("/proc/self/stat", 4096)
        if int(again.rsplit(b")", 1)[1].split()[11]) > utime_before:
            break
    else:
        pytest.fail("a held /proc/self/stat never showed more CPU time")
    assert files._held["/proc/self/stat"][0] == fd  # the same descriptor, read again
    files.close()


def test_a_tree_declared_in_place_is_read_without_checks_for_replaced_files(tmp_path):
    """NicSampler(tree_in_place=True): a counter rewritten in place is read anew; a file replaced by
    rename is not noticed (the declared trade-off); by default it is."""
    from c4.agent.nic import NicSampler
    from c4.sim.sysfs_tree import update_counters, write_ib_port, write_netdev

    def port_tx(sampler) -> int:
        (row,) = sampler.sample(0)["ib_port_samples"]
        return row["tx_bytes"]

    write_ib_port(tmp_path, "mlx5_0", 1, rate_gbps=400, netdev="e0", counters={"port_xmit_data": 10})
    write_netdev(tmp_path, "e0")
    in_place, checked = NicSampler(tmp_path, tree_in_place=True), NicSampler(tmp_path)
    for s in (in_place, checked):
        s.probe()
        assert port_tx(s) == 40
    update_counters(tmp_path, "mlx5_0", 1, {"port_xmit_data": 11})  # pwrite in place
    assert port_tx(in_place) == port_tx(checked) == 44
    path = tmp_path / "class/infiniband/mlx5_0/ports/1/counters/port_xmit_data"
    (tmp_path / "new").write_text("12\n")
    os.replace(tmp_path / "new", path)  # a new file under the name
    assert port_tx(checked) == 48
    assert port_tx(in_place) == 44  # the held, unlinked file: what tree_in_place promises not to happen
    for s in (in_place, checked):
        s.close()
