"""Findings date their fault from the first anomalous sample, not from the start of the diagnosis window."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from c4.analytics.findings import Finding
from c4.analytics.hardware import (
    congestion_findings,
    counter_burst_findings,
    gpu_state_findings,
    nic_link_findings,
    nic_retrans_findings,
)
from c4.analytics.lifecycle import FaultBook

T0 = datetime(2027, 1, 1)
SAMPLES = 60  # one window: 60 samples, 1 s apart
ONSET = 37  # the fault shows from this sample on, mid-window
BAD = ("host1", "mlx5_3", 1)


def at(i: int) -> datetime:
    """The ts of sample ``i``."""
    return T0 + timedelta(seconds=i)


def ports(bad: dict[str, list[int]]) -> pl.DataFrame:
    """16 healthy ports (a retransmit and a symbol error every 20 s, like real links), and BAD's counters
    given per sample in ``bad``."""
    rows = []
    for n in range(2):
        for d in range(8):
            key = (f"host{n}", f"mlx5_{d}", 1)
            for i in range(SAMPLES):
                noise = i // 20
                row = {
                    "ts": at(i),
                    "node": key[0],
                    "device": key[1],
                    "port": 1,
                    "state": "ACTIVE",
                    "rate_bps": 400_000_000_000,
                    "link_downed": 0,
                    "roce_adp_retrans": noise,
                    "symbol_errors": noise,
                    "link_error_recovery": 0,
                    "np_cnp_sent": 0,
                }
                if key == BAD:
                    row.update({col: values[i] for col, values in bad.items()})
                rows.append(row)
    return pl.DataFrame(rows)


def ramp(per_s: int, onset: int = ONSET) -> list[int]:
    """A counter with the healthy noise that rises by ``per_s`` per sample from ``onset`` on."""
    return [i // 20 + per_s * max(0, i - onset + 1) for i in range(SAMPLES)]


def only(findings: list[Finding], detector: str) -> Finding:
    """The single finding of ``detector`` (on BAD)."""
    mine = [f for f in findings if f.detector == detector]
    assert [f.component for f in mine] == ["host1/mlx5_3p1"], findings
    return mine[0]


def test_retransmits_date_from_the_first_sample_above_healthy_ports():
    f = only(nic_retrans_findings(ports({"roce_adp_retrans": ramp(40)})), "nic_retrans")
    assert f.first_seen == at(ONSET) and f.last_seen == at(SAMPLES - 1)


def test_flapping_dates_from_the_first_carrier_loss():
    downs = [0] * ONSET + [1] * 5 + [2] * 5 + [3] * (SAMPLES - ONSET - 10)
    state = ["ACTIVE"] * SAMPLES
    state[ONSET] = state[ONSET + 5] = state[ONSET + 10] = "DOWN"
    f = only(nic_link_findings(ports({"link_downed": downs, "state": state})), "nic_flap")
    assert f.first_seen == at(ONSET)


def test_symbol_errors_date_from_the_first_sample_above_healthy_ports():
    f = only(
        counter_burst_findings({"ib_port_samples": ports({"symbol_errors": ramp(30)})}), "nic_symbol_errors"
    )
    assert f.first_seen == at(ONSET)


def test_a_slow_leak_dates_from_when_it_exceeded_a_healthy_port():
    """Errors that trickle in cross the healthy baseline later than they start: never before they start."""
    f = only(
        counter_burst_findings({"ib_port_samples": ports({"symbol_errors": ramp(6, onset=10)})}),
        "nic_symbol_errors",
    )
    assert at(10) <= f.first_seen <= at(12)  # healthy ports: 2 errors, MAD 0: above 8 errors is anomalous


def test_a_port_down_dates_from_its_last_active_sample():
    state = ["ACTIVE"] * ONSET + ["DOWN"] * (SAMPLES - ONSET)
    state[5] = "DOWN"  # an earlier blip that recovered is not this outage
    downs = [0] * 5 + [1] * (ONSET - 5) + [2] * (SAMPLES - ONSET)
    f = only(nic_link_findings(ports({"state": state, "link_downed": downs}), flaps=3), "nic_down")
    assert f.first_seen == at(ONSET)


def test_gpu_conditions_date_from_the_start_of_their_current_run():
    rows = []
    for g in range(8):
        for i in range(SAMPLES):
            bad = g == 2 and i >= ONSET
            rows.append(
                {
                    "ts": at(i),
                    "node": "host0",
                    "gpu_index": g,
                    "clocks_event_reasons": 0x40 if bad or (g == 2 and i == 3) else 0,
                    "pcie_gen_cur": 3 if bad else 5,
                    "pcie_gen_max": 5,
                    "remapped_rows_failure": int(bad),
                    "temp_gpu_c": 90,
                    "clock_sm_mhz": 900,
                }
            )
    got = {f.detector: f.first_seen for f in gpu_state_findings(pl.DataFrame(rows))}
    assert got == {"gpu_throttle": at(ONSET), "pcie_downtrain": at(ONSET), "row_remap_failure": at(ONSET)}


def test_congestion_dates_from_the_first_cnps():
    cnps = [0] * ONSET + [500 * (i - ONSET + 1) for i in range(ONSET, SAMPLES)]
    df = ports({"np_cnp_sent": cnps}).with_columns(pl.col("roce_adp_retrans") * 0)
    (f,) = congestion_findings(df)
    assert f.first_seen == at(ONSET)


@pytest.mark.parametrize("late", [True, False])
def test_the_book_keeps_the_earliest_onset(late):
    """A later run whose window no longer holds the onset (or sees it earlier, from late data) keeps the earliest."""

    def finding(first):
        return Finding("nic_retrans", "hardware", "nic_port", "h/p", "h", first, at(59), 0.8, "x", "s")

    book = FaultBook()
    book.update([finding(at(ONSET))], at(59))
    (row,) = book.update([finding(at(ONSET + 20) if late else at(ONSET - 5))], at(60))
    assert row["first_seen"] == (at(ONSET) if late else at(ONSET - 5))


def test_a_port_is_dated_from_when_all_its_connections_were_slow():
    """A connection slow since before the fault (a flow colliding on a switch) does not date the port's fault."""
    from c4.analytics.collective import _explained_since

    mine = [{"first": at(3)}, {"first": at(ONSET)}, {"first": at(ONSET + 1)}]
    assert _explained_since(mine, len(mine)) == at(ONSET + 1)  # a port: every one of its connections
    assert _explained_since(mine, 2) == at(ONSET)  # a cable: as many as its share of slow ones needs


def test_the_book_never_dates_a_fault_after_its_detection():
    """Rows stamped by a node clock a little ahead of the diagnosis clock do not date a fault in its future."""
    ahead = Finding("hang_comm", "comm_hang", "nic_port", "h/p", "h", at(61), at(61), 0.8, "x", "s")
    (row,) = FaultBook().update([ahead], at(60))
    assert row["first_seen"] == at(60)
    (row,) = FaultBook().update(
        [Finding("xid79", "hardware", "gpu", "g", "h", None, None, 1, "x", "s")], at(60)
    )
    assert row["first_seen"] is None  # a finding that cannot date its fault is not dated by the book
