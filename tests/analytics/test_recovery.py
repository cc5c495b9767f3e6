"""Recovery timeline: restart and return to the normal period from collectives; the timeline views over a store."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pyarrow as pa

from c4.analytics.recovery import RecoveryWatch, disrupted_ts, recovered_ts, restart_ts
from c4.catalogue import Catalogue
from c4.collector.store import PendingBatch, Store

T0 = datetime(2026, 1, 1, 12, 0, 0)


def colls(points: list[tuple[float, int]], comm: str = "c1", ranks: tuple[int, ...] = (0, 1)) -> pl.DataFrame:
    """Records of one communicator: (seconds after T0, coll_sn), logged by each rank."""
    return pl.DataFrame(
        [
            {"ts": T0 + timedelta(seconds=t), "comm_id": comm, "rank": r, "coll_sn": sn}
            for t, sn in points
            for r in ranks
        ],
        schema={"ts": pl.Datetime("us"), "comm_id": pl.String, "rank": pl.Int64, "coll_sn": pl.Int64},
    )


def run_with_restart() -> pl.DataFrame:
    """1 s iterations to sn 19 at t=19, a hang (no records) until 40, then sequence numbers from 0 again."""
    before = [(float(i), i) for i in range(20)]
    after = [(40.0 + i, i) for i in range(10)]
    return colls(before + after)


def test_restart_is_a_sequence_number_drop_after_the_onset():
    found = restart_ts(run_with_restart(), T0 + timedelta(seconds=10))
    assert found is not None
    assert found[0] == T0 + timedelta(seconds=40)
    assert "19 -> 0" in found[1]
    assert restart_ts(run_with_restart(), T0 + timedelta(seconds=45)) is None  # no drop after that


def test_a_new_communicator_from_zero_is_a_restart_but_not_a_comm_that_was_always_there():
    old = colls([(float(i), 100 + i) for i in range(10)], comm="old")
    new = colls([(30.0 + i, i) for i in range(5)], comm="new")
    found = restart_ts(pl.concat([old, new]), T0 + timedelta(seconds=5))
    assert found is not None and found[0] == T0 + timedelta(seconds=30) and "new comm new" in found[1]
    assert restart_ts(new, T0 + timedelta(seconds=5)) is None  # nothing ran before: not a restart


def test_recovered_after_three_normal_iterations_and_not_while_slow():
    slow_then_normal = colls(
        [(float(i), i) for i in range(10)]  # normal 1 s
        + [(10.0 + 4 * k, 10 + k) for k in range(1, 4)]  # 4 s iterations: slowed
        + [(22.0 + k, 13 + k) for k in range(1, 6)]  # back to 1 s
    )
    assert disrupted_ts(slow_then_normal, T0 + timedelta(seconds=9), 1.0) == T0 + timedelta(seconds=14)
    back = recovered_ts(slow_then_normal, T0 + timedelta(seconds=14), 1.0)
    assert back is not None and back[0] == T0 + timedelta(seconds=25) and back[1] == 1.0
    still_slow = colls([(4.0 * k, k) for k in range(10)])
    assert recovered_ts(still_slow, T0, 1.0) is None


def store_with(tmp_path, table: str, rows: list[dict]) -> Store:
    """A real store with ``rows`` appended to ``table``."""
    store = Store(tmp_path / "c4.duckdb", Catalogue.from_dir())
    spec = store.catalogue[table]
    store.commit([PendingBatch.internal(spec, rows)])
    return store


def fault(ts: datetime, first_seen: datetime, fault_id: str = "xid:host2/gpu3", state: str = "open") -> dict:
    """One faults row."""
    return {
        "ts": ts,
        "node": "host2",
        "job": "",
        "fault_id": fault_id,
        "detector": "xid",
        "fault_class": "hardware",
        "component_type": "gpu",
        "component": "host2/gpu3",
        "first_seen": first_seen,
        "last_seen": ts,
        "confidence": 0.9,
        "action": "replace_gpu",
        "state": state,
        "summary": "x",
        "evidence_json": "{}",
        "evidence_sql": "",
        "communicator": "",
        "slowdown_frac": None,
        "affected": "",
    }


def action(ts: datetime, sink: str, outcome: str, fault_id: str = "xid:host2/gpu3") -> dict:
    """One actions row."""
    return {
        "ts": ts,
        "node": "host2",
        "job": "train",
        "fault_id": fault_id,
        "sink": sink,
        "target": "t",
        "fault_state": "open",
        "outcome": outcome,
        "attempts": 1,
        "detail": "",
    }


def test_timeline_views_count_only_what_happened(tmp_path):
    at = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    store = store_with(tmp_path, "faults", [fault(at(12), at(10)), fault(at(22), at(10))])
    acts = [
        action(at(13), "webhook", "failed"),
        action(at(14), "webhook", "sent"),
        action(at(14), "isolation", "dry_run"),
        action(at(15), "restart", "ran"),
        action(at(16), "restart", "ran"),  # a second row never moves the stage
    ]
    store.commit([PendingBatch.internal(store.catalogue["actions"], acts)])
    obs = [
        {
            "ts": at(40),
            "node": "host2",
            "job": "train",
            "fault_id": "xid:host2/gpu3",
            "stage": "recovered",
            "period_s": 1.0,
            "detail": "d",
        },
    ]
    store.commit([PendingBatch.internal(store.catalogue["fault_observations"], obs)])
    cur = store.cursor()
    stages = dict(cur.execute("SELECT stage, since_onset_s FROM fault_timeline").fetchall())
    assert stages == {
        "onset": 0.0,
        "detected": 2.0,
        "alerted": 4.0,
        "isolated_dry_run": 4.0,
        "restarted": 5.0,
        "recovered": 30.0,
    }
    rec = cur.execute("SELECT * FROM fault_recovery").pl().to_dicts()[0]
    assert rec["time_to_detect_s"] == 2.0 and rec["time_to_recover_s"] == 30.0
    assert rec["isolated"] is None and rec["time_to_isolate_s"] is None  # a dry run isolates nothing
    store.close()


def test_watch_records_each_stage_once_and_resumes_from_the_store(tmp_path):
    at = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    store = store_with(tmp_path, "faults", [fault(at(21), at(20))])
    rows = run_with_restart().with_columns(
        node=pl.lit("host2"), job=pl.lit("train"), hostname=pl.lit("host2"), pid=pl.lit(1)
    )
    spec = store.catalogue["nccl_collectives"]
    table = pa.Table.from_pylist(rows.to_dicts())
    store.commit([PendingBatch.internal(spec, [_fill(spec, r) for r in table.to_pylist()])])
    nodes = store.catalogue["nodes"]
    store.commit(
        [PendingBatch.internal(nodes, [_fill(nodes, {"ts": at(0), "node": "host2", "job": "train"})])]
    )
    watch = RecoveryWatch(watch_s=1e9)
    cur = store.cursor()
    got = watch.observe(cur, lookback_s=120, max_skew_s=300, now=at(60))
    assert {(r["stage"], r["ts"]) for r in got} == {("restarted", at(40)), ("recovered", at(43))}
    assert watch.observe(cur, 120, 300, now=at(60)) == []  # once
    store.commit([PendingBatch.internal(store.catalogue["fault_observations"], got)])
    again = RecoveryWatch(watch_s=1e9)
    again.load(cur)
    assert again.observe(cur, 120, 300, now=at(60)) == []  # a restarted collector does not repeat them
    store.close()


def _fill(spec, row: dict) -> dict:
    """``row`` with every other column of ``spec`` null."""
    return {c: row.get(c) for c in spec.arrow_schema.names}


def test_a_restart_long_after_the_fault_resolved_is_not_its_recovery(monkeypatch):
    monkeypatch.setattr("c4.analytics.recovery.RESOLVED_GRACE_S", 10.0)
    at = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    watch = RecoveryWatch()
    # onset at 12 s, resolved at 15 s: the restart at 40 s is 25 s after, past the grace
    assert watch._stages("nic:x", "host2", "train", at(12), at(15), run_with_restart()) == []
    got = RecoveryWatch()._stages("nic:x", "host2", "train", at(12), at(35), run_with_restart())
    assert [r["stage"] for r in got] == ["restarted", "recovered"]


class _CountingCursor:
    """A cursor that counts the queries reading nccl_collectives."""

    def __init__(self, cur) -> None:
        self.cur, self.reads = cur, 0

    def execute(self, sql, params=None):
        self.reads += "FROM nccl_collectives" in sql
        return self.cur.execute(sql, params) if params is not None else self.cur.execute(sql)


def test_the_faults_of_one_job_share_one_read_of_its_collectives(tmp_path):
    at = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    store = store_with(
        tmp_path, "faults", [fault(at(21), at(20)), fault(at(22), at(15), fault_id="nic:host2/mlx5_0p1")]
    )
    rows = run_with_restart().with_columns(
        node=pl.lit("host2"), job=pl.lit("train"), hostname=pl.lit("host2"), pid=pl.lit(1)
    )
    spec = store.catalogue["nccl_collectives"]
    table = pa.Table.from_pylist(rows.to_dicts())
    store.commit([PendingBatch.internal(spec, [_fill(spec, r) for r in table.to_pylist()])])
    nodes = store.catalogue["nodes"]
    store.commit(
        [PendingBatch.internal(nodes, [_fill(nodes, {"ts": at(0), "node": "host2", "job": "train"})])]
    )
    cur = _CountingCursor(store.cursor())
    got = RecoveryWatch(watch_s=1e9).observe(cur, lookback_s=120, max_skew_s=300, now=at(60))
    assert cur.reads == 1  # two faults of job train, one read
    assert {(r["fault_id"], r["stage"]) for r in got} == {
        (f, s) for f in ("xid:host2/gpu3", "nic:host2/mlx5_0p1") for s in ("restarted", "recovered")
    }
    store.close()
