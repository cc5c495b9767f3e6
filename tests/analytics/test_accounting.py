"""Job accounting: productive, slowed, hung, restarting and redone time from hand-made collective series."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from c4.analytics.accounting import account_job

T0 = datetime(2026, 1, 1, 12, 0, 0)
COLLS = {
    "ts": pl.Datetime("us"),
    "comm_id": pl.String,
    "rank": pl.Int64,
    "coll_sn": pl.Int64,
    "node": pl.String,
    "n_ranks": pl.Int64,
}


def at(s: float) -> datetime:
    """T0 + s seconds."""
    return T0 + timedelta(seconds=s)


def colls(points: list[tuple[float, int]], comm: str = "c1", ranks: int = 4) -> pl.DataFrame:
    """Records of one communicator: (seconds after T0, coll_sn), logged by each of ``ranks`` ranks on 2 nodes."""
    return pl.DataFrame(
        [
            {"ts": at(t), "comm_id": comm, "rank": r, "coll_sn": sn, "node": f"n{r // 2}", "n_ranks": ranks}
            for t, sn in points
            for r in range(ranks)
        ],
        schema=COLLS,
    )


def faults(*rows: tuple[str, str, float, float, float | None]) -> pl.DataFrame:
    """Faults: (fault_id, class, first_seen s, last_seen s, resolved s or None while open)."""
    return pl.DataFrame(
        [
            {
                "fault_id": f,
                "fault_class": c,
                "component": f.split(":")[-1],
                "first_seen": at(a),
                "last_seen": at(b),
                "resolved_at": None if r is None else at(r),
            }
            for f, c, a, b, r in rows
        ],
        schema={
            "fault_id": pl.String,
            "fault_class": pl.String,
            "component": pl.String,
            "first_seen": pl.Datetime("us"),
            "last_seen": pl.Datetime("us"),
            "resolved_at": pl.Datetime("us"),
        },
    )


def by(rows: list[dict], key: str = "category") -> dict[str, float]:
    """Lost seconds per category (or kind)."""
    out: dict[str, float] = {}
    for r in rows:
        out[r[key]] = out.get(r[key], 0.0) + r["lost_s"]
    return out


def assert_tiles(rows: list[dict]) -> None:
    """The rows cover the accounted range without gap or overlap, and lost time adds up."""
    rows = sorted(rows, key=lambda r: (r["ts"], r["end_ts"]))
    for a, b in zip(rows, rows[1:], strict=False):
        assert a["end_ts"] == b["ts"], (a, b)
    wall = (rows[-1]["end_ts"] - rows[0]["ts"]).total_seconds()
    productive = sum(r["wall_s"] - r["lost_s"] for r in rows)
    assert sum(r["wall_s"] for r in rows) == pytest.approx(wall)
    assert sum(r["lost_s"] for r in rows) == pytest.approx(wall - productive)
    assert all(0 <= r["lost_s"] <= r["wall_s"] + 1e-9 for r in rows)


def jitter(i: int) -> float:
    """A deterministic +-2% wobble of a 1 s iteration."""
    return 0.02 * ((i * 7919) % 5 - 2) / 2


def test_a_healthy_job_loses_nothing():
    t, pts = 0.0, []
    for i in range(120):
        t += 1.0 + jitter(i)
        pts.append((t, i))
    acc = account_job("train", colls(pts), now=at(t + 1))
    assert acc.outcome == "ok" and acc.runs == 1 and acc.period_s == pytest.approx(1.0, abs=0.02)
    assert sum(r["lost_s"] for r in acc.rows) == 0.0
    assert [r["category"] for r in acc.rows] == ["productive"]
    assert acc.rows[0]["gpus"] == 4
    assert_tiles(acc.rows)


def test_a_slowdown_is_its_extra_time_attributed_to_the_fault():
    pts = [(float(i), i) for i in range(60)]  # 1 s
    pts += [(59.0 + 1.5 * k, 59 + k) for k in range(1, 21)]  # 20 iterations of 1.5 s: 10 s lost
    pts += [(89.0 + k, 79 + k) for k in range(1, 31)]
    f = faults(("gpu_throttle:n1/gpu2", "hardware", 60.0, 89.0, 95.0))
    acc = account_job("train", colls(pts), now=at(120), faults=f)
    lost = by(acc.rows)
    assert lost == {"productive": 0.0, "slowed": pytest.approx(10.0)}
    slowed = [r for r in acc.rows if r["category"] == "slowed"]
    assert len(slowed) == 1 and slowed[0]["fault_id"] == "gpu_throttle:n1/gpu2"
    assert slowed[0]["component"] == "n1/gpu2" and slowed[0]["fault_class"] == "hardware"
    assert slowed[0]["gpu_hours_lost"] == pytest.approx(10.0 * 4 / 3600)
    assert acc.period_s == 1.0  # learned where no fault was
    assert_tiles(acc.rows)


def hang_then_restart(new_comm: bool = True) -> pl.DataFrame:
    """Run 0: 1 s iterations, sn 0..59 at t=1..60, then silence; run 1 (a new comm, or the same from sn 0)
    from t=121: sn 0..59."""
    old = colls([(1.0 + i, i) for i in range(60)], comm="a")
    new = colls([(121.0 + i, i) for i in range(60)], comm="b" if new_comm else "a")
    return pl.concat([old, new])


def step_ops(ranges: list[tuple[float, int, int]], checkpoint_after: set[int] = frozenset()) -> pl.DataFrame:
    """A step trace of rank 0: (start s of the first step, first step, last step), 1 s steps of 3 ops, a
    checkpoint op after the listed steps."""
    rows = []
    for t0, first, last in ranges:
        for k, step in enumerate(range(first, last + 1)):
            s = t0 + k
            for j, op in enumerate(("forward", "backward", "all_reduce")):
                rows.append({"ts": at(s + j * 0.3), "step": step, "op": op, "end": at(s + j * 0.3 + 0.3)})
            if step in checkpoint_after:
                rows.append({"ts": at(s + 0.95), "step": step, "op": "checkpoint", "end": at(s + 1.0)})
    return pl.DataFrame(
        rows, schema={"ts": pl.Datetime("us"), "step": pl.Int64, "op": pl.String, "end": pl.Datetime("us")}
    )


HANG = faults(("rank_hang:n1/gpu0", "non_comm_hang", 70.0, 90.0, 125.0))


def test_a_hang_restart_and_redone_steps_from_the_trace():
    # steps 0..59 in run 0 (checkpoint after 49); run 1 resumes at step 50 from t=120, steps 50..109
    trace = step_ops([(0.0, 0, 59), (120.0, 50, 109)], checkpoint_after={49})
    acc = account_job(
        "train",
        hang_then_restart(),
        now=at(181),
        faults=HANG,
        restarts=[(at(90), "rank_hang:n1/gpu0")],
        step_ops=trace,
    )
    assert acc.runs == 2
    kinds = by(acc.rows, "kind")
    # progress is the trace's step ends: step 59 ended at 59.9; the command ran at 90
    assert kinds["hung"] == pytest.approx(30.1)
    assert kinds["restarting"] == pytest.approx(30.0)  # the command to the new run's first op at 120
    assert kinds["redone"] == pytest.approx(9.9)  # run 1 resumed at step 50: run 0's steps 50-59 (50 to 59.9)
    assert {r["fault_id"] for r in acc.rows if r["lost_s"] > 0} == {"rank_hang:n1/gpu0"}
    assert {r["basis"] for r in acc.rows if r["kind"] == "redone"} == {"step_ops"}
    assert {r["run"] for r in acc.rows if r["kind"] == "redone"} == {0}
    assert_tiles(acc.rows)


def test_redone_from_the_checkpoint_op_when_the_new_run_has_no_trace():
    trace = step_ops([(0.0, 0, 59)], checkpoint_after={49})  # checkpoint ends at t=50
    acc = account_job("train", hang_then_restart(), now=at(181), faults=HANG, step_ops=trace)
    kinds = by(acc.rows, "kind")
    assert kinds["redone"] == pytest.approx(9.9)  # run 0's work from the checkpoint's end at 50 to 59.9
    assert kinds["restarting"] == pytest.approx(61.1)  # no restart command: the whole gap to 121
    assert "hung" not in kinds
    assert_tiles(acc.rows)


def test_redone_from_the_configured_checkpoint_interval_on_a_reused_communicator():
    acc = account_job(
        "train", hang_then_restart(new_comm=False), now=at(181), faults=HANG, checkpoint_interval_s=25.0
    )
    assert acc.runs == 2
    # run 0 from 1 to 60: checkpoints at 26 and 51, so 9 s since the last one are done again
    redone = [r for r in acc.rows if r["kind"] == "redone"]
    assert sum(r["lost_s"] for r in redone) == pytest.approx(9.0)
    assert redone[0]["ts"] == at(51) and redone[0]["basis"] == "checkpoint_interval"
    assert_tiles(acc.rows)


def test_without_checkpoints_redone_is_unknown_and_says_so():
    acc = account_job("train", hang_then_restart(), now=at(181), faults=HANG)
    redone = [r for r in acc.rows if r["kind"] == "redone"]
    assert len(redone) == 1 and redone[0]["basis"] == "unknown"
    assert redone[0]["wall_s"] == 0.0 and redone[0]["fault_id"] == "rank_hang:n1/gpu0"
    assert_tiles(acc.rows)


def test_a_gap_no_fault_explains_is_unexplained():
    pts = [(float(i), i) for i in range(30)] + [(50.0 + i, 30 + i) for i in range(30)]  # a 21 s gap
    acc = account_job("train", colls(pts), now=at(80))
    unexplained = [r for r in acc.rows if r["category"] == "unexplained"]
    assert len(unexplained) == 1 and unexplained[0]["kind"] == "hung"
    assert unexplained[0]["lost_s"] == pytest.approx(20.0) and unexplained[0]["fault_id"] == ""
    assert_tiles(acc.rows)


def test_a_silence_at_the_end_is_hung_only_while_a_fault_covers_it():
    pts = [(float(i), i) for i in range(30)]
    ended = account_job("train", colls(pts), now=at(100))
    assert sum(r["lost_s"] for r in ended.rows) == 0.0 and ended.rows[-1]["end_ts"] == at(29)
    hung = account_job(
        "train", colls(pts), now=at(100), faults=faults(("comm_hang:x", "comm_hang", 35, 100, None))
    )
    assert by(hung.rows)["hung"] == pytest.approx(70.0)  # after one period of the iteration's work
    assert hung.silent_since == at(29)
    assert_tiles(hung.rows)
    # no fault, but the job's processes still held their GPUs until 80 s: hung (unexplained) until then
    alive = account_job("train", colls(pts), now=at(100), alive_until=at(80))
    (h,) = [r for r in alive.rows if r["kind"] == "hung"]
    assert (h["category"], h["basis"], h["lost_s"], h["end_ts"]) == (
        "unexplained",
        "gpu_processes",
        50.0,
        at(80),
    )
    assert_tiles(alive.rows)
    gone = account_job("train", colls(pts), now=at(100), alive_until=at(31))  # processes gone soon after
    assert sum(r["lost_s"] for r in gone.rows) == 0.0


def test_bad_data_gives_a_clear_outcome():
    assert account_job("train", colls([]), now=at(10)).outcome == "no_records"
    one = account_job("train", colls([(1.0, 5)]), now=at(10))
    assert one.outcome == "no_period" and one.rows == [] and one.skipped_by_reason == {"no_period": 1}
    nulls = colls([(float(i), i) for i in range(10)]).with_columns(
        pl.when(pl.col("coll_sn") == 3).then(None).otherwise(pl.col("coll_sn")).alias("coll_sn")
    )
    acc = account_job("train", nulls, now=at(10))
    assert acc.skipped_by_reason["null_field"] == 4  # one record of each of 4 ranks
    # the clock steps back 5 s at sn 20: counted, never negative time nor a restart
    back = [(float(i), i) for i in range(20)] + [(15.0 + i, 20 + i) for i in range(20)]
    acc = account_job("train", colls(back), now=at(40))
    assert acc.outcome == "ok" and acc.runs == 1 and acc.skipped_by_reason["clock_backwards"] == 1
    assert all(r["wall_s"] >= 0 for r in acc.rows)
    assert_tiles(acc.rows)
