"""``start_collector`` (the tests' and benchmarks' way to run ``c4 collector``) reports a collector that died
at start at once, with its log's last lines, not after a 30 s wait that says only "not healthy"."""

from __future__ import annotations

import time

import pytest

from c4.sim.procs import start_collector


def test_a_collector_that_exits_at_start_is_reported_at_once_with_its_log(tmp_path):
    started = time.monotonic()
    with pytest.raises(ChildProcessError) as err:
        start_collector(tmp_path / "work", extra=["--no-such-option"])
    assert time.monotonic() - started < 25  # not the 30 s health wait
    assert "exited with 2 before serving" in str(err.value)
    assert "unrecognized arguments: --no-such-option" in str(err.value)  # the log's tail
