"""The Goodput page's SQL on a real collector store holding two jobs' accounts (goodput_rows.py): ETTR per bucket,
totals, lost GPU-hours by category and cause, the worst faults and the recovery stage counts, checked by number."""

from __future__ import annotations

import pyarrow as pa
import pytest
from goodput_rows import F1, F2, F3, ROWS, at

from c4.catalogue import load
from c4.collector.store import PendingBatch, Store
from c4.ui.queries import goodput as q

#: A window that covers both accounts whole (they span 1800 s).
WIDE_S = 3600.0


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real collector store with the accounts, faults, actions and observations written through Store.commit."""
    cat = load()
    s = Store(tmp_path_factory.mktemp("goodput") / "c4.duckdb", cat)
    try:
        s.commit(
            [
                PendingBatch.internal(cat[t], rows())
                for t, rows in ROWS.items()  # one transaction, as a diagnosis pass commits
            ]
        )
        yield s
    finally:
        s.close()


@pytest.fixture
def sql(store):
    """Run SQL read-only on the store; rows as dicts."""

    def run(text: str) -> list[dict]:
        with store.reading() as cur:
            t = cur.execute(text).to_arrow_table()
        assert isinstance(t, pa.Table)
        return t.to_pylist()

    return run


def test_totals_over_the_whole_account(sql):
    (row,) = sql(q.totals(WIDE_S))
    assert row["jobs"] == 2
    assert row["wall_s"] == pytest.approx(3600)
    assert row["lost_s"] == pytest.approx(60 + 60 + 180 + 120 + 60)  # the superseded pass is not counted
    assert row["ettr"] == pytest.approx(3120 / 3600)
    assert row["gpu_hours_lost"] == pytest.approx(420 * 16 / 3600 + 60 * 8 / 3600)
    assert (row["start"], row["end_ts"]) == (at(0), at(1800))


def test_totals_per_job_equal_the_job_goodput_view(sql):
    view = {r["job"]: r for r in sql("SELECT * FROM job_goodput")}
    for job in ("A", "B"):
        (row,) = sql(q.totals(WIDE_S, job))
        assert row["ettr"] == pytest.approx(view[job]["ettr"])
        assert row["gpu_hours_lost"] == pytest.approx(view[job]["gpu_hours_lost"])
    listed = sql(q.jobs())
    assert [r["job"] for r in listed] == ["A", "B"]  # worst ETTR first
    assert listed[0]["ettr"] == pytest.approx(1380 / 1800)


def test_a_window_clips_the_interval_straddling_its_start(sql):
    # window 1000 s ends at +1800: starts at +800, inside job A's redone interval (720-900, 180 s lost)
    (row,) = sql(q.totals(1000, "A"))
    assert row["wall_s"] == pytest.approx(1000)
    assert row["lost_s"] == pytest.approx(100 + 120)  # 100 of the redone interval's 180 s, the slowed 120 s
    assert row["gpu_hours_lost"] == pytest.approx(220 * 16 / 3600)
    (both,) = sql(q.totals(900))
    assert both["ettr"] == pytest.approx((900 - 120 + 900 - 60) / 1800)


def test_ettr_per_bucket(sql):
    assert q.ettr_bucket_s(WIDE_S) == 60
    rows = sql(q.ettr_series(WIDE_S))
    a = {r["t"]: r for r in rows if r["job"] == "A"}
    b = {r["t"]: r for r in rows if r["job"] == "B"}
    assert len(a) == len(b) == 30  # 1800 s in 60 s buckets, every one with accounted time
    assert a[at(0)]["ettr"] == pytest.approx(1.0)
    assert a[at(600)]["ettr"] == pytest.approx(0.0)  # hung
    assert a[at(660)]["ettr"] == pytest.approx(0.0)  # restarting
    assert a[at(1200)]["ettr"] == pytest.approx(0.8)  # slowed: 120 s lost of 600, evenly
    assert a[at(1740)]["ettr"] == pytest.approx(0.8)
    assert b[at(1500)]["ettr"] == pytest.approx(0.0) and b[at(1440)]["ettr"] == pytest.approx(1.0)
    assert sum(r["wall_s"] for r in a.values()) == pytest.approx(1800)
    assert sum(r["productive_s"] for r in a.values()) == pytest.approx(1380)


def test_ettr_buckets_split_an_interval_across_their_boundary(sql):
    # a 900 s window gives 15 s buckets; job B's unexplained 1500-1560 fills four of them exactly
    rows = [r for r in sql(q.ettr_series(900, "B"))]
    assert {r["job"] for r in rows} == {"B"}
    zero = sorted(r["t"] for r in rows if r["ettr"] == pytest.approx(0.0))
    assert zero == [at(1500), at(1515), at(1530), at(1545)]
    assert all(r["wall_s"] == pytest.approx(15) for r in rows)


def test_lost_by_category_lists_every_category(sql):
    rows = sql(q.lost_by_category(WIDE_S))
    assert [r["category"] for r in rows] == list(q.LOST_CATEGORIES)
    got = {r["category"]: r["lost_s"] for r in rows}
    assert got == pytest.approx(
        {"hung": 60, "slowed": 120, "restarting": 60, "redone": 180, "unexplained": 60}
    )
    only_b = {r["category"]: r["gpu_hours_lost"] for r in sql(q.lost_by_category(WIDE_S, "B"))}
    assert only_b == pytest.approx({c: 0 for c in q.LOST_CATEGORIES} | {"unexplained": 60 * 8 / 3600})


def test_lost_gpu_hours_by_fault_class_and_component(sql):
    rows = sql(q.lost_by_cause(WIDE_S))
    by_class: dict[str, float] = {}
    for r in rows:
        by_class[r["fault_class"]] = by_class.get(r["fault_class"], 0) + r["gpu_hours_lost"]
    assert by_class == pytest.approx(
        {"hardware": 300 * 16 / 3600, "slow_worker": 120 * 16 / 3600, "unexplained": 60 * 8 / 3600}
    )
    nic = {r["category"]: r["lost_s"] for r in rows if r["component"] == "host1/mlx5_2p1"}
    assert nic == pytest.approx({"hung": 60, "restarting": 60, "redone": 180})
    assert rows[0]["component"] == "host1/mlx5_2p1" and rows[0]["category"] == "redone"  # costliest first
    assert {r["component"] for r in rows if r["fault_class"] == "unexplained"} == {"(no fault)"}


def test_worst_faults_ordered_by_cost_with_state_and_summary(sql):
    rows = sql(q.worst_faults(WIDE_S))
    assert [r["fault_id"] for r in rows] == [F1, F2]  # F3 cost nothing: absent
    f1, f2 = rows
    assert f1["gpu_hours_lost"] == pytest.approx(300 * 16 / 3600)
    assert (f1["hung_s"], f1["restarting_s"], f1["redone_s"], f1["slowed_s"]) == pytest.approx(
        (60, 60, 180, 0)
    )
    assert f1["state"] == "resolved" and f1["summary"] == "port at half rate"  # the fault's newest row
    assert f2["slowed_s"] == pytest.approx(120) and f2["state"] == "open"
    # with the whole account in the window the numbers are the fault_cost view's
    view = {r["fault_id"]: r for r in sql("SELECT * FROM fault_cost")}
    for r in rows:
        for col in ("lost_s", "gpu_hours_lost", "hung_s", "slowed_s", "restarting_s", "redone_s"):
            assert r[col] == pytest.approx(view[r["fault_id"]][col]), col
    # a window after F1's lost time leaves F2 alone
    assert [r["fault_id"] for r in sql(q.worst_faults(600))] == [F2]
    assert [r["fault_id"] for r in sql(q.worst_faults(WIDE_S, limit=1))] == [F1]


def test_recovery_counts_and_times(sql):
    (c,) = sql(q.recovery_counts(WIDE_S))
    assert c["faults"] == 3
    assert (c["detected"], c["alerted"], c["isolated"], c["restarted"], c["recovered"]) == (3, 1, 1, 1, 1)
    assert c["isolated_dry_run"] == 1 and c["restarted_dry_run"] == 0  # F2's dry run counts as no isolation
    assert c["detected_median_s"] == pytest.approx(30) and c["detected_max_s"] == pytest.approx(40)
    times = sql(q.recovery_times(WIDE_S))
    got = {(r["fault_id"], r["stage"]): r["seconds"] for r in times}
    assert got == pytest.approx(
        {
            (F1, "detected"): 10,
            (F2, "detected"): 40,
            (F3, "detected"): 30,
            (F1, "alerted"): 15,
            (F1, "isolated"): 30,
            (F1, "restarted"): 70,
            (F1, "recovered"): 310,
        }
    )
    assert [r["stage"] for r in times] == ["detected"] * 3 + ["alerted", "isolated", "restarted", "recovered"]


def test_recovery_of_one_job_and_window(sql):
    # job A: F2 is its fault, F1 (job '') is blamed by its account; job B: F3
    (a,) = sql(q.recovery_counts(WIDE_S, "A"))
    assert (a["faults"], a["detected"], a["recovered"]) == (2, 2, 1)
    (b,) = sql(q.recovery_counts(WIDE_S, "B"))
    assert (b["faults"], b["isolated"]) == (1, 0)
    # 900 s back from the newest fault row (+1230): onsets from +330, so F3 (onset +100) is out
    (w,) = sql(q.recovery_counts(900))
    assert w["faults"] == 2
    assert {r["fault_id"] for r in sql(q.recovery_times(900))} == {F1, F2}


def test_an_empty_store_gives_empty_answers(tmp_path):
    s = Store(tmp_path / "empty.duckdb", load())
    try:
        with s.reading() as cur:
            assert cur.execute(q.jobs()).fetchall() == []
            (row,) = cur.execute(q.totals(900)).fetchall()
            assert row[0] == 0  # no jobs: the page shows its empty state
            assert cur.execute(q.ettr_series(900)).fetchall() == []
            assert cur.execute(q.lost_by_cause(900)).fetchall() == []
            assert cur.execute(q.worst_faults(900)).fetchall() == []
            assert [r[1] for r in cur.execute(q.lost_by_category(900)).fetchall()] == [0] * 5
            assert cur.execute(q.recovery_counts(900)).fetchall()[0][0] == 0
    finally:
        s.close()
