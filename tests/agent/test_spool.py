"""The spool keeps order across restarts, never reuses a sequence number, and drops oldest when full."""

from c4.agent.spool import Spool


def test_order_restart_and_no_seq_reuse(tmp_path):
    s = Spool(tmp_path, 1 << 20)
    seqs = [s.append("t", 1, f"payload-{i}".encode()) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    s.ack(1)
    s.ack(2)
    s2 = Spool(tmp_path, 1 << 20)  # restart
    assert s2.pending() == [3, 4, 5]
    assert s2.read(4).payload == b"payload-3" and s2.read(4).table == "t"
    for q in (3, 4, 5):
        s2.ack(q)
    s3 = Spool(tmp_path, 1 << 20)  # empty spool, but numbers continue
    assert s3.append("t", 1, b"x") == 6


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
    (tmp_path / "00000000000000000099.batch.tmp").write_bytes(b"torn")
    assert s.ack_through(2) == 2
    s2 = Spool(tmp_path, 1 << 20)
    assert s2.pending() == [3, 4]
    assert not list(tmp_path.glob("*.tmp"))
    s2.ack_through(50)  # the collector knows of a later seq (state lost): continue past it
    assert s2.append("t", 1, b"y") == 51
