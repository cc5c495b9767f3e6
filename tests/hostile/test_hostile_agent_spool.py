"""Issue 15 item 2: the spool on a full disk. Writes are all or nothing, every record is checksummed,
a full disk is reported once per episode, and sampling resumes cleanly when space returns; spools
written by the previous record format are still read."""

from __future__ import annotations

import json
import logging
import struct

import pytest
from testkit.agent_rig import heartbeat_agent, spooled
from testkit.procs import CollectorProc
from testkit.small_disk import fill, small_tmpfs
from testkit.wait import wait_for

from c4.agent.spool import Spool
from c4.query import query_arrow


def assert_ticks_once(ticks: list[int], last: int) -> None:
    """Every heartbeat tick 1..last exactly once."""
    dupes = sorted({t for t in ticks if ticks.count(t) > 1})
    missing = sorted(set(range(1, last + 1)) - set(ticks))
    assert not dupes and not missing, f"duplicated ticks {dupes[:10]}, missing ticks {missing[:10]} of {last}"


def test_full_spool_disk_loses_nothing_and_recovers(tmp_path, caplog):
    caplog.set_level(logging.INFO, "c4.agent")
    with small_tmpfs(tmp_path / "disk", 512 << 10) as disk:
        agent, hb = heartbeat_agent(tmp_path, disk / "spool")
        agent.start()
        try:
            wait_for(lambda: hb.tick >= 20, what="ticks before the disk fills")
            filler = fill(disk)
            full_at = hb.tick
            wait_for(lambda: hb.tick >= full_at + 60, what="ticks while the disk is full")
            filler.unlink()
            freed_at = hb.tick
            wait_for(lambda: hb.tick >= freed_at + 40, what="ticks after space returned")
        finally:
            agent.stop()
        rows = spooled(disk / "spool")  # every record reads back and decodes: no garbage
    assert_ticks_once([r["tick"] for r in rows["agent_heartbeat"]], hb.tick)
    health = rows["agent_health"]
    during = [h for h in health if h["spool_error"]]
    assert during and all("No space left" in h["spool_error"] for h in during)
    assert max(h["batches_held"] for h in during) > 0
    assert health[-1]["spool_error"] == "" and health[-1]["batches_held"] == 0
    assert all(h["batches_unspooled"] == 0 for h in health)  # held in memory, nothing dropped
    assert caplog.text.count("spool write failed") == 1  # one line per episode, not per tick
    assert caplog.text.count("spool writable again") == 1


def test_full_spool_disk_then_every_tick_reaches_the_collector(tmp_path):
    col = CollectorProc(tmp_path).start()
    try:
        with small_tmpfs(tmp_path / "disk", 512 << 10) as disk:
            agent, hb = heartbeat_agent(tmp_path, disk / "spool", collector=col.address)
            agent.start()
            try:
                wait_for(lambda: agent.sender.stats.batches_acked >= 5, what="first acks")
                filler = fill(disk)
                wait_for(lambda: agent.spool_error, what="the agent noticing the full disk")
                full_at = hb.tick
                wait_for(lambda: hb.tick >= full_at + 40, what="ticks while the disk is full")
                filler.unlink()
                wait_for(
                    lambda: not agent.spool_error and not agent.held_batches, what="held batches spooled"
                )
            finally:
                agent.stop()
            assert agent.batches_unspooled == 0
        table, _ = query_arrow(col.address, "SELECT tick FROM agent_heartbeat WHERE node = 'rig'")
        assert_ticks_once(table.column(0).to_pylist(), hb.tick)
    finally:
        col.stop()


def test_spool_write_on_full_disk_is_all_or_nothing(tmp_path):
    with small_tmpfs(tmp_path / "disk", 256 << 10) as disk:
        s = Spool(disk / "spool", 1 << 30)
        first = [s.append("t", 1, bytes([i]) * 3000) for i in range(5)]
        fill(disk)
        with pytest.raises(OSError, match="No space left"):
            for _ in range(200):
                s.append("t", 1, b"y" * 3000)
        kept = s.pending()
        assert kept[: len(first)] == first
        assert all(s.read(q) is not None for q in kept)
        (disk / "filler").unlink()
        nxt = s.append("t", 1, b"after")
        assert s.read(nxt).payload == b"after"
        s.close()
        s2 = Spool(disk / "spool", 1 << 30)
        assert s2.pending() == [*kept, nxt] and s2.read(nxt).payload == b"after"
        assert [s2.read(q).payload for q in kept] == [s.read(q).payload for q in kept]
        assert nxt == kept[-1] + 1  # the failed append used no sequence number
        assert s.write_errors == 1 and s2.damaged == 0  # nothing half-written was left behind


def test_damaged_record_is_rejected_and_its_neighbours_kept(tmp_path, caplog):
    s = Spool(tmp_path, 1 << 20)
    for i in range(3):
        s.append("t", 1, bytes([65 + i]) * 200)
    s.close()
    (seg,) = tmp_path.glob("*.seg")
    data = bytearray(seg.read_bytes())
    pos = data.index(b"B" * 200)
    data[pos + 100] ^= 0xFF  # one flipped byte in the middle record's payload
    seg.write_bytes(bytes(data))
    s2 = Spool(tmp_path, 1 << 20)
    assert s2.pending() == [1, 3] and s2.damaged == 1
    assert s2.read(1).payload == b"A" * 200 and s2.read(3).payload == b"C" * 200
    assert "damaged" in caplog.text


def test_damage_after_opening_is_caught_by_read(tmp_path):
    s = Spool(tmp_path, 1 << 20)
    for i in range(3):
        s.append("t", 1, bytes([65 + i]) * 200)
    (seg,) = tmp_path.glob("*.seg")
    with open(seg, "r+b") as f:
        data = f.read()
        f.seek(data.index(b"B" * 200) + 5)
        f.write(b"\x00")
    assert s.read(2) is None and s.damaged == 1 and s.pending() == [1, 3]
    assert s.read(3).payload == b"C" * 200


def legacy_record(seq: int, table: str, payload: bytes) -> bytes:
    """A record as the previous spool version wrote it: <u32 header length><JSON header><payload>."""
    header = json.dumps({"seq": seq, "table": table, "schema_version": 1, "size": len(payload)}).encode()
    return struct.pack("<I", len(header)) + header + payload


def test_spool_of_the_previous_version_is_read_after_upgrade(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"next_seq": 1025}))
    (tmp_path / f"{7:020d}.seg").write_bytes(
        b"".join(legacy_record(q, "agent_heartbeat", f"old-{q}".encode()) for q in (7, 8, 9))
        + b'\x40\x00\x00\x00{"seq": 10, "ta'  # torn by a crash, as before
    )
    s = Spool(tmp_path, 1 << 20)
    assert s.pending() == [7, 8, 9] and s.read(8).payload == b"old-8"
    new = s.append("t", 1, b"new")
    assert new >= 1025
    s.close()
    s2 = Spool(tmp_path, 1 << 20)
    assert s2.pending() == [7, 8, 9, new] and s2.read(9).payload == b"old-9"
    assert s2.read(new).payload == b"new" and s2.damaged == 0
