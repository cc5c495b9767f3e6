"""A real agent and a real collector: when the collector's commits fall behind it asks for fewer,
larger batches and the agent flushes less often (samples keep their interval, none lost); once its
commits are quick again the advice comes down and the agent flushes at its own interval again."""

from __future__ import annotations

import time

from testkit.agent_rig import heartbeat_agent
from testkit.inprocess_collector import RunningCollector
from testkit.wait import wait_for

from c4.collector.flush_advice import FlushAdvisor


def batches_per_s(col, seconds: float) -> float:
    before = col.committed_batches()
    time.sleep(seconds)
    return (col.committed_batches() - before) / seconds


def test_agent_follows_the_collectors_flush_advice_both_ways(tmp_path):
    col = RunningCollector(tmp_path)
    # the collector's own advisor, with a short calm period so that the test sees it come down
    advisor = FlushAdvisor(max_s=2.0, hold_s=6.0)
    col.collector.service.flush_advisor = advisor
    agent, hb = heartbeat_agent(tmp_path, tmp_path / "spool", collector=col.address)
    agent.start()
    try:
        wait_for(lambda: col.committed_batches() > 20, 30, "agent's batches committed")
        fast = batches_per_s(col, 1.0)
        # commits fall behind (as the collector's PushBundle would report them): the advice goes up
        for _ in range(200):
            advisor.observe(1.0)
            time.sleep(0.01)
        assert advisor.advice_s() == 2.0
        wait_for(lambda: agent.sender.flush_advice_s == 2.0, 10, "agent took the advice")
        assert agent.flush_interval_s() == 2.0
        time.sleep(2.5)  # the agent's flush under way on its old interval, and the first on its phase
        slow = batches_per_s(col, 4.0)
        assert slow < fast / 5, (fast, slow)
        # the agent's real bundles are quick: after the calm period the advice comes down again
        wait_for(lambda: agent.sender.flush_advice_s == 0.0, 30, "advice lowered")
        wait_for(lambda: batches_per_s(col, 1.0) > fast / 3, 10, "agent flushing at its own interval")
    finally:
        agent.stop()  # drains its spool
    assert len(agent.spool) == 0
    rows, ticks = col.rows("rig")
    col.stop()
    assert rows == ticks == hb.tick  # every sampled tick stored, once


def test_advice_outside_zero_to_a_minute_is_taken_as_none(tmp_path):
    """A collector's advice is a double off the wire: NaN, infinite, negative or absurd is no advice."""
    from c4.agent.client import MAX_FLUSH_ADVICE_S, Sender
    from c4.agent.spool import Spool

    spool = Spool(tmp_path / "spool", 1 << 20)
    sender = Sender("127.0.0.1:1", "a", spool, lambda: None)
    try:
        for wire, taken in [
            (5.0, 5.0),
            (MAX_FLUSH_ADVICE_S, MAX_FLUSH_ADVICE_S),
            (float("nan"), 0.0),
            (float("inf"), 0.0),
            (-1.0, 0.0),
            (1e9, 0.0),
            (0.0, 0.0),
        ]:
            sender._take_flush_advice(wire)
            assert sender.flush_advice_s == taken, wire
    finally:
        spool.close()


def test_a_longer_advice_moves_the_next_flush_out_at_once(tmp_path):
    """An agent told to flush less often does not flush once more at its own interval first: its next
    flush moves to its phase of the advised interval from its last flush (the collector's load drops
    at the raise, and an agent joining a busy collector does not flush a second after its Hello)."""
    from c4.agent.runner import flush_phase

    col = RunningCollector(tmp_path)
    advisor = FlushAdvisor(max_s=10.0, hold_s=600.0)
    col.collector.service.flush_advisor = advisor
    agent, _hb = heartbeat_agent(tmp_path, tmp_path / "spool", collector=col.address, flush_interval_s=1.0)
    assert flush_phase(agent.cfg.effective_agent_id) * 10.0 > 5.0  # the next flush lies > 5 s out
    agent.start()
    try:
        wait_for(lambda: agent.batches_made >= 3, 30, "the agent flushing every second")
        for _ in range(300):  # commits fall behind until the advice goes up
            advisor.observe(1.0)
            time.sleep(0.01)
            if advisor.advice_s() == 10.0:
                break
        assert advisor.advice_s() == 10.0
        wait_for(lambda: agent.sender.flush_advice_s == 10.0, 10, "agent took the advice", poll_s=0.005)
        time.sleep(0.05)  # the scheduler's next pass (it ticks every 10 ms) saw it
        made = agent.batches_made
        time.sleep(2.5)  # on its own interval it would have flushed within 1 s
        assert agent.batches_made == made
    finally:
        agent.stop()
    assert len(agent.spool) == 0
    col.stop()
