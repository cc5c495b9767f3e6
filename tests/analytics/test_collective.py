"""Collective detectors on twin data: hangs, stragglers and slow connections localized; negatives quiet."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
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

T0 = datetime(2026, 1, 1)
TABLES = ("nccl_collectives", "nccl_connections", "gpu_samples")


def detect(tmp_path, faults, steps=25, **cluster):
    _, rows = run_twin(tmp_path, faults, steps=steps, **cluster)
    f = frames(rows, TABLES)
    colls, conns, gpus = f["nccl_collectives"], f["nccl_connections"], f["gpu_samples"]
    now = gpus["ts"].max()
    found = (
        hang_findings(colls, gpus, now)
        + comm_hang_findings(conns, iteration_period_s(colls))
        + straggler_findings(colls, conns=conns)
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


@pytest.mark.parametrize("verbose", [True, False], ids=["verbose", "default"])
@pytest.mark.parametrize("kind", [None, "uniform_slowdown", "transient_slowdown", "job_restart"])
def test_negative_runs_raise_nothing(tmp_path, kind, verbose):
    faults = [Fault(kind, at_s=6, duration_s=3, node="host2", factor=0.3)] if kind else []
    got, _ = detect(tmp_path, faults, inspector_verbose=verbose)
    assert got == set()


def test_straggler_is_found_on_the_default_inspector_form(tmp_path):
    """NCCL Inspector's default output has no start times: the slow GPU is the rank that waits least."""
    _, rows = run_twin(tmp_path, [Fault("slow_gpu", at_s=2, node="host2", gpu=5, factor=0.15)], steps=25)
    f = frames(rows, TABLES)
    colls, conns = f["nccl_collectives"], f["nccl_connections"]
    assert colls["start_ts"].null_count() == colls.height
    (found,) = straggler_findings(colls, conns=conns)
    assert (found.component, found.evidence["signal"]) == ("host2/gpu5", "exec_time_us")
    assert found.evidence["collectives_last"] >= 5
    # senders to the straggler wait for its clear-to-send far longer than senders to its peers
    assert found.evidence["peer_wait_us_towards"] > 5 * found.evidence["peer_wait_us_others"]


@pytest.mark.parametrize("verbose", [True, False], ids=["verbose", "default"])
def test_thermal_straggler_is_found_on_both_inspector_forms(tmp_path, verbose):
    got, colls = detect(
        tmp_path,
        [Fault("thermal_throttle", at_s=2, node="host0", gpu=3, factor=0.15)],
        inspector_verbose=verbose,
    )
    assert (colls["start_ts"].null_count() == 0) is verbose
    assert got == {("straggler", "host0/gpu3", "non_comm_slow")}, got


def exec_frame(
    slow_rank: int | None, seqs: int = 12, ranks: int = 8, noisy: set[int] = frozenset()
) -> pl.DataFrame:
    """Default-form rows: every rank's collective ends when the last arrives; a slow rank waits least."""
    rows = []
    for seq in range(seqs):
        late = {r: 0.001 * ((r * 7 + seq * 3) % 5) for r in range(ranks)}
        if slow_rank is not None and seq not in noisy:
            late[slow_rank] = 0.25
        last = max(late.values())
        for r in range(ranks):
            rows.append(
                {
                    "ts": T0 + timedelta(seconds=seq * 1.3),
                    "comm_id": "c1",
                    "rank": r,
                    "kind": "coll",
                    "coll_sn": seq,
                    "hostname": f"h{r // 4}",
                    "exec_time_us": (last - late[r] + 0.05) * 1e6,
                    "start_ts": None,
                }
            )
    return pl.DataFrame(rows, schema_overrides={"start_ts": pl.Datetime("us")})


def test_default_form_straggler_tolerates_a_noisy_collective():
    """Rank 6 waits least in 11 of 12 collectives (one where jitter hid it): still the straggler."""
    (f,) = straggler_findings(exec_frame(6, noisy={7}))
    assert (f.component, f.evidence["rank"], f.evidence["collectives_last"]) == ("h1/gpu6", 6, 11)
    assert 0.2 < f.evidence["late_s"] < 0.3


def test_default_form_quiet_without_a_straggler_or_after_it_recovered():
    assert straggler_findings(exec_frame(None)) == []
    recovered = exec_frame(6, noisy={9, 10, 11})  # slow until collective 8, then back in step
    assert straggler_findings(recovered) == []


def test_restarted_job_reusing_sequence_numbers_is_not_a_straggler():
    """After a restart, sequence numbers start again: the old records of a number do not count."""
    before = exec_frame(None)
    after = exec_frame(None).with_columns(pl.col("ts") + timedelta(seconds=30))
    assert straggler_findings(pl.concat([before, after])) == []


def test_senders_waiting_on_the_straggler_are_evidence():
    colls = exec_frame(3)
    conns = pl.DataFrame(
        [
            {
                "comm_hash": "c1",
                "direction": "send",
                "ops": 1,
                "rank": (p - 1) % 8,
                "peer_rank": p,
                "wait_peer_us": 240_000.0 if p == 3 else 1_000.0,
            }
            for p in range(8)
        ]
    )
    (f,) = straggler_findings(colls, conns=conns)
    assert (f.evidence["peer_wait_us_towards"], f.evidence["peer_wait_us_others"]) == (240_000.0, 1_000.0)
