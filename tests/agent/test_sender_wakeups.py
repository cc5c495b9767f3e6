"""The sender sleeps until there is something to do: a new flush's batches or its stream's end wake it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from c4.agent.spool import Spool
from c4.agent.spool_feed import SpoolFeed


def _waiter(spool: Spool, after: int, timeout_s: float, out: list) -> threading.Thread:
    def run() -> None:
        t0 = time.monotonic()
        got = spool.wait_for_more(after, timeout_s)
        out.append((got, time.monotonic() - t0))

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.2)  # let it wait
    return t


def test_a_flush_wakes_the_waiting_sender_with_all_its_batches(tmp_path):
    """SpoolFeed appends a flush's batches without waking the sender for each, then wakes it once."""
    spool = Spool(tmp_path, 1 << 20)
    out: list = []
    t = _waiter(spool, 0, 30.0, out)
    SpoolFeed(spool, 1 << 20).feed([("t", 1, b"a"), ("t", 1, b"b"), ("t", 1, b"c")])
    t.join(10)
    assert out and out[0][0] is True and out[0][1] < 10  # woken, not timed out
    assert spool.pending() == [1, 2, 3]


def test_wake_ends_a_wait_without_new_batches_and_acks_do_not(tmp_path):
    """wake() (the stream ended) returns the waiter at once with False; an ack alone does not wake it."""
    spool = Spool(tmp_path, 1 << 20)
    seq = spool.append("t", 1, b"x")
    out: list = []
    t = _waiter(spool, seq, 30.0, out)
    spool.ack(seq)
    time.sleep(0.3)
    assert not out  # still waiting: an ack brings nothing new to send
    spool.wake()
    t.join(10)
    assert out and out[0][0] is False and out[0][1] < 10


def test_quiet_grpc_waits_sets_the_slice_in_its_own_process():
    """The agent process's gRPC waits re-check every GRPC_WAIT_SLICE_S; other processes keep gRPC's default."""
    code = (
        "import grpc._common as c\n"
        "from c4.agent.client import GRPC_WAIT_SLICE_S, quiet_grpc_waits\n"
        "before = c.MAXIMUM_WAIT_TIMEOUT\n"
        "assert quiet_grpc_waits() is True\n"
        "print(before, c.MAXIMUM_WAIT_TIMEOUT == GRPC_WAIT_SLICE_S)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0.1", "True"], out
