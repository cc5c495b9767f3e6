"""The spool keeps order across restarts, never reuses a sequence number, and drops oldest when full."""

from c4.agent.spool import Spool


def test_order_restart_and_no_seq_reuse(tmp_path):
    s = Spool(tmp_path, 1 << 20)
    seqs = [s.append("t", 1, f"payload-{i}".encode()) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    s.ack(1)
    s.ack(2)
    s2 = Spool(tmp_path, 1 << 20)  # restart: acks are not persisted, Hello's last committed seq is
    assert s2.pending() == [1, 2, 3, 4, 5]
    s2.ack_through(2)
    assert s2.pending() == [3, 4, 5]
    assert s2.read(4).payload == b"payload-3" and s2.read(4).table == "t"
    for q in (3, 4, 5):
        s2.ack(q)
    s2.close()
    assert not list(tmp_path.glob("*.seg"))  # fully acknowledged segments are gone
    s3 = Spool(tmp_path, 1 << 20)  # empty spool, but numbers continue past every one ever used
    assert s3.append("t", 1, b"x") > 5


def test_full_spool_drops_oldest_and_counts(tmp_path, caplog):
    s = Spool(tmp_path, 4000)
    for _ in range(10):
        s.append("t", 1, b"x" * 900)
    assert s.dropped > 0 and s.bytes <= 4000
    assert s.pending() == list(range(11 - len(s.pending()), 11))
    assert "spool full" in caplog.text


def test_ack_through_and_torn_write(tmp_path):
    s = Spool(tmp_path, 1 << 20)
    for i in range(4):
        s.append("t", 1, bytes([i]))
    (tmp_path / "state.json.tmp").write_bytes(b"torn")
    assert s.ack_through(2) == 2
    s2 = Spool(tmp_path, 1 << 20)
    assert s2.pending() == [1, 2, 3, 4]  # acks are not persisted: the collector's Hello says what is stored
    s2.ack_through(2)
    assert s2.pending() == [3, 4]
    assert not list(tmp_path.glob("*.tmp"))
    before = s2.next_seq
    s2.ack_through(2**64 - 1)  # a collector ahead of this spool never moves its numbering (the Sender
    assert s2.next_seq == before and not s2.pending()  # starts a new epoch instead; this once overflowed)
    assert s2.append("t", 1, b"y") == before


def test_torn_record_is_cut_off_on_reopen(tmp_path):
    s = Spool(tmp_path, 1 << 20)
    for i in range(3):
        s.append("t", 1, bytes([i]) * 100)
    s.close()
    (seg,) = tmp_path.glob("*.seg")
    with open(seg, "ab") as f:
        f.write(b'\x40\x00\x00\x00{"seq": 4, "tab')  # a crash in the middle of the next record
    s2 = Spool(tmp_path, 1 << 20)
    assert s2.pending() == [1, 2, 3] and s2.read(3).payload == bytes([2]) * 100
    assert s2.append("t", 1, b"new") > 3


def test_acknowledged_segments_are_deleted(tmp_path, monkeypatch):
    import c4.agent.spool as spool_mod

    monkeypatch.setattr(spool_mod, "SEGMENT_BYTES", 300)
    s = Spool(tmp_path, 1 << 20)
    seqs = [s.append("t", 1, b"x" * 200) for _ in range(6)]
    assert len(list(tmp_path.glob("*.seg"))) >= 3
    for q in seqs[:-1]:
        s.ack(q)
    assert len(list(tmp_path.glob("*.seg"))) == 1  # only the active segment remains


def test_epoch_is_drawn_once_persisted_and_rotated(tmp_path):
    import json

    s = Spool(tmp_path, 1 << 20)
    assert isinstance(s.epoch, int) and 0 < s.epoch < 1 << 63
    seq = s.append("t", 1, b"x")
    s.close()
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == s.epoch and state["next_seq"] > seq
    s2 = Spool(tmp_path, 1 << 20)
    assert s2.epoch == s.epoch  # the same spool keeps its epoch across restarts
    old, next_seq = s2.epoch, s2.next_seq
    new = s2.new_epoch()
    assert new == s2.epoch != old and 0 < new < 1 << 63
    assert s2.pending() == [seq] and s2.append("t", 1, b"y") == next_seq  # batches and numbers untouched
    s2.close()
    s3 = Spool(tmp_path, 1 << 20)
    assert s3.epoch == new and json.loads((tmp_path / "state.json").read_text())["epoch"] == new
    assert Spool(tmp_path / "other", 1 << 20).epoch != new  # a new spool directory draws its own


def test_spool_without_an_epoch_gets_one_on_open(tmp_path):
    import json

    (tmp_path / "state.json").write_text(json.dumps({"next_seq": 2049}))  # written by the previous version
    s = Spool(tmp_path, 1 << 20)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state == {"next_seq": 2049, "epoch": s.epoch} and s.epoch > 0
    assert s.append("t", 1, b"x") == 2049
    assert Spool(tmp_path, 1 << 20).epoch == s.epoch
