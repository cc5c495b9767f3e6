"""Collective detectors on twin data: hangs, stragglers and slow connections localized; negatives quiet."""

from __future__ import annotations

import pytest
from testkit.twin import frames, run_twin

from c4.analytics.collective import (
    comm_hang_findings,
    hang_findings,
    iteration_period_s,
    slow_connection_findings,
    straggler_findings,
)
from c4.sim.twin import Fault

TABLES = ("nccl_collectives", "nccl_connections", "gpu_samples")


def detect(tmp_path, faults, steps=25):
    _, rows = run_twin(tmp_path, faults, steps=steps)
    f = frames(rows, TABLES)
    colls, conns, gpus = f["nccl_collectives"], f["nccl_connections"], f["gpu_samples"]
    now = gpus["ts"].max()
    found = (
        hang_findings(colls, gpus, now)
        + comm_hang_findings(conns, iteration_period_s(colls))
        + straggler_findings(colls)
        + slow_connection_findings(conns, colls)
    )
    return {(x.detector, x.component, x.fault_class) for x in found}, colls


def test_period_is_learned(tmp_path):
    _, colls = detect(tmp_path, [], steps=10)
    assert 1.0 < iteration_period_s(colls) < 1.5


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault("rank_hang", at_s=8, node="host1", gpu=4), ("hang_non_comm", "host1/gpu4", "non_comm_hang")),
        (Fault("comm_hang", at_s=8, node="host3", nic=1), ("hang_comm", "host3/mlx5_1p1", "comm_hang")),
        (
            Fault("thermal_throttle", at_s=2, node="host0", gpu=3, factor=0.3),
            ("straggler", "host0/gpu3", "non_comm_slow"),
        ),
        (
            Fault("nic_degraded", at_s=2, node="host1", nic=2, factor=0.5),
            ("slow_connection", "host1/mlx5_2p1", "comm_slow"),
        ),
    ],
    ids=lambda x: x.kind if isinstance(x, Fault) else "",
)
def test_collective_faults_are_localized(tmp_path, fault, expected):
    got, _ = detect(tmp_path, [fault])
    assert expected in got, got
    assert {g[1].split("/")[0] for g in got} == {fault.node}, f"false alarm elsewhere: {got}"


@pytest.mark.parametrize("kind", [None, "uniform_slowdown", "transient_slowdown", "job_restart"])
def test_negative_runs_raise_nothing(tmp_path, kind):
    faults = [Fault(kind, at_s=6, duration_s=3, node="host2", factor=0.3)] if kind else []
    got, _ = detect(tmp_path, faults)
    assert got == set()
