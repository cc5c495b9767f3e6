"""C4D looks ``delivery_lag_s`` behind the clock: rows newer than that (not every node has delivered
them yet, when agents flush every few seconds) stay out of the pass; without a lag they are in."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

import c4.analytics.runner as runner_module
from c4.analytics.runner import DiagnosisRunner
from c4.catalogue import load
from c4.collector.store import PendingBatch, Store

CATALOGUE = load()
NOW = datetime(2026, 12, 5, 12, 0, 0)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "c4.duckdb", CATALOGUE)
    spec = CATALOGUE["gpu_samples"]
    rows = [
        {"ts": NOW - timedelta(seconds=age), "node": node, "gpu_index": 0, "util_gpu_pct": 90.0}
        for node in ("n0", "n1")
        for age in range(30, 5, -1)
    ]
    # the newest 5 s: only n0 has delivered them
    rows += [
        {"ts": NOW - timedelta(seconds=age), "node": "n0", "gpu_index": 0, "util_gpu_pct": 90.0}
        for age in range(5)
    ]
    (result,) = s.commit([PendingBatch.internal(spec, rows)])
    assert not result.error
    yield s
    s.close()


@pytest.mark.parametrize("lag_s", [0.0, 5.0])
def test_the_pass_reads_up_to_the_lag_behind_the_clock(store, monkeypatch, lag_s):
    seen = {}

    def capture(tables, fabric, now, attributions=None):
        seen["now"], seen["gpus"] = now, tables["gpu_samples"]
        return []

    monkeypatch.setattr(runner_module, "diagnose", capture)
    runner = DiagnosisRunner(CATALOGUE, window_s=60.0, delivery_lag_s=lag_s)
    cur = store.cursor()
    try:
        runner.run_once(cur, NOW)
    finally:
        cur.close()
    gpus = seen["gpus"]
    assert seen["now"] == NOW - timedelta(seconds=lag_s)
    newest = {n: gpus.filter(gpus["node"] == n)["ts"].max() for n in ("n0", "n1")}
    if lag_s:  # every node's rows end at the same time: none is ahead of the others
        assert newest["n0"] <= NOW - timedelta(seconds=lag_s) and newest["n1"] == NOW - timedelta(seconds=6)
        assert newest["n0"] - newest["n1"] <= timedelta(seconds=1)
    else:  # n0's newest seconds are in, n1's are not (yet)
        assert newest["n0"] == NOW and newest["n1"] == NOW - timedelta(seconds=6)


def test_the_collector_config_takes_a_delivery_lag_and_refuses_a_negative_one():
    from c4.config import CollectorConfig

    assert CollectorConfig().diagnose_delivery_lag_s == 0.0
    with pytest.raises(ValueError):
        CollectorConfig(diagnose_delivery_lag_s=-1)
    assert CollectorConfig(diagnose_delivery_lag_s=5).diagnose_delivery_lag_s == 5.0
