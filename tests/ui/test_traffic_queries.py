"""The Traffic page's SQL on a real collector store: the plan picker with each plan's job and reason, a job's plan
history, and ECMP's busiest and overloaded links beside the plan's, checked by number.

Links are 400 Gbit/s (5e8 bytes drain in 10 ms) and every plan's bound is 10 ms, so a link's load over the bound
is its bytes / 5e8.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from c4.catalogue import load
from c4.collector.store import PendingBatch, Store
from c4.ui.queries import traffic as q

T0 = datetime(2026, 1, 1, 0, 0, 0)
UNIT = 5e8  # bytes that fill a 400G link for the 10 ms bound

#: P2's links: (link, tier, plan load, ECMP load) in units of the bound.
P2_LINKS = [
    ("leaf0->spine0", "fabric_up", 1.0, 1.8),
    ("leaf0->spine1", "fabric_up", 1.0, 0.2),
    ("spine0->leaf1", "fabric_down", 0.8, 1.2),
    ("spine1->leaf1", "fabric_down", 1.0, 1.0),  # ECMP as loaded as the plan's busiest: not overloaded
    ("host1/nic0p0->leaf1", "host_up", 0.5, 1.1),  # a host link: not a fabric link
]
#: P1's links: ECMP's busiest (leaf9->spine9) is worse than P2's, and must not leak into P2's figures.
P1_LINKS = [("leaf9->spine9", "fabric_up", 0.9, 3.0)]


def at(s: float) -> datetime:
    """T0 plus ``s`` seconds."""
    return T0 + timedelta(seconds=s)


def link_row(plan_id: str, link: str, tier: str, plan: float, ecmp: float, ts: datetime) -> dict:
    """A plan_links row of a 400G link."""
    src, dst = link.split("->")
    return {
        "ts": ts,
        "node": "",
        "job": "dp0",
        "plan_id": plan_id,
        "link": link,
        "src": src,
        "dst": dst,
        "tier": tier,
        "capacity_gbps": 400.0,
        "plan_bytes": plan * UNIT,
        "ecmp_bytes": ecmp * UNIT,
        "spray_bytes": UNIT,
        "bound_s": 0.01,
    }


def piece_row(plan_id: str, job: str, src: str, dst: str, qp: int, ts: datetime) -> dict:
    """A plans row (one piece)."""
    return {
        "ts": ts,
        "node": "",
        "job": job,
        "plan_id": plan_id,
        "src": src,
        "dst": dst,
        "channel": 0,
        "qp": qp,
        "src_port": f"{src}/nic0p0",
        "dst_port": f"{dst}/nic0p0",
        "src_ip": "10.0.0.1",
        "dst_ip": "10.0.0.2",
        "udp_sport": 49152 + qp,
        "lag_port": 0,
        "path": "leaf0>spine0>leaf1",
        "share_bytes": 1e6,
        "max_load_over_bound": 1.0,
    }


def run_row(plan_id: str, job: str, reason: str, ts: datetime, **kw) -> dict:
    """A plan_runs row."""
    return {
        "ts": ts,
        "node": "",
        "job": job,
        "plan_id": plan_id,
        "reason": reason,
        "fault_id": "",
        "link": "",
        "previous_plan_id": "",
        "connections": 2,
        "pieces": 3,
        "moved_pieces": 0,
        "max_load_over_bound": 1.0,
        "ecmp_over_bound": 1.8,
        "bound_s": 0.01,
        "completion_s": 0.0102,
        "applied": "",
        **kw,
    }


ROWS = {
    "plans": [
        piece_row("P1", "dp0", "host0", "host1", 0, at(0)),
        piece_row("P2", "dp0", "host0", "host1", 0, at(60)),
        piece_row("P2", "dp0", "host0", "host1", 1, at(60)),
        piece_row("P2", "pp", "host1", "host0", 0, at(60)),
        piece_row("P9", "solo", "host0", "host1", 0, at(30)),  # stored before plan_runs existed
    ],
    "plan_links": [link_row("P2", *r, at(60)) for r in P2_LINKS]
    + [link_row("P1", *r, at(0)) for r in P1_LINKS],
    "plan_runs": [
        run_row("P1", "train", "initial", at(0), max_load_over_bound=0.9, ecmp_over_bound=3.0),
        run_row(
            "P2",
            "train",
            "link_down",
            at(60),
            fault_id="link_down:leaf0->spine3",
            link="leaf0->spine3",
            previous_plan_id="P1",
            moved_pieces=2,
            applied="twin",
        ),
        run_row("P3", "other", "manual", at(90)),
    ],
}


@pytest.fixture(scope="module")
def sql(tmp_path_factory):
    """Run SQL read-only on a real store holding ROWS, written through the catalogue in one commit."""
    cat = load()
    store = Store(tmp_path_factory.mktemp("traffic") / "c4.duckdb", cat)
    store.commit([PendingBatch.internal(cat[t], rows) for t, rows in ROWS.items()])

    def run(text: str) -> list[dict]:
        with store.reading() as cur:
            t = cur.execute(text).to_arrow_table()
        assert isinstance(t, pa.Table)
        return t.to_pylist()

    try:
        yield run
    finally:
        store.close()


def test_the_picker_lists_plans_newest_first_with_their_job_and_reason(sql):
    rows = {r["plan_id"]: r for r in sql(q.plans())}
    assert [r["plan_id"] for r in sql(q.plans())] == ["P2", "P9", "P1"]  # P3 has no pieces nor links
    assert (rows["P2"]["job"], rows["P2"]["reason"]) == (
        "train",
        "link_down",
    )  # plan_runs' job, not a piece's
    assert (rows["P2"]["pieces"], rows["P2"]["connections"], rows["P2"]["links"]) == (3, 2, len(P2_LINKS))
    assert (rows["P9"]["job"], rows["P9"]["reason"]) == ("solo", None)  # no plan_runs row: the pieces' job


def test_a_jobs_history_in_the_order_its_plans_were_made(sql):
    hist = sql(q.history("train"))
    assert [(r["plan_id"], r["reason"], r["previous_plan_id"]) for r in hist] == [
        ("P1", "initial", ""),
        ("P2", "link_down", "P1"),
    ]
    p2 = hist[1]
    assert (p2["fault_id"], p2["link"], p2["moved_pieces"], p2["applied"]) == (
        "link_down:leaf0->spine3",
        "leaf0->spine3",
        2,
        "twin",
    )
    assert (hist[0]["max_load_over_bound"], hist[0]["ecmp_over_bound"]) == (0.9, 3.0)
    assert p2["created"] == at(60) and p2["completion_s"] == pytest.approx(0.0102)
    assert [r["plan_id"] for r in sql(q.history("other"))] == ["P3"]
    assert sql(q.history("nobody")) == []


def test_the_summary_names_ecmps_busiest_link_against_the_plans_busiest(sql):
    (h,) = sql(q.routing_summary("P2"))
    assert h["ecmp_link"] == "leaf0->spine0" and h["ecmp_tier"] == "fabric_up"
    assert (h["plan"], h["ecmp"], h["spray"]) == (pytest.approx(1.0), pytest.approx(1.8), pytest.approx(1.0))
    assert h["times"] == pytest.approx(1.8) and h["links"] == len(P2_LINKS) and h["bound_s"] == 0.01
    assert (
        h["fabric_overloaded"] == 2
    )  # leaf0->spine0 and spine0->leaf1; not the equal one, not the host link
    (h1,) = sql(q.routing_summary("P1"))
    assert (h1["ecmp_link"], h1["times"]) == ("leaf9->spine9", pytest.approx(3.0 / 0.9))


def test_the_overloaded_fabric_links_beside_the_plans_load_on_them(sql):
    rows = sql(q.ecmp_overloads("P2"))
    assert [r["link"] for r in rows] == ["leaf0->spine0", "spine0->leaf1"]  # worst first
    worst, second = rows
    assert (worst["ecmp_over_bound"], worst["plan_over_bound"]) == (pytest.approx(1.8), pytest.approx(1.0))
    assert (second["ecmp_over_bound"], second["plan_over_bound"]) == (pytest.approx(1.2), pytest.approx(0.8))
    assert second["ecmp_over_plan_max"] == pytest.approx(1.2)
    assert worst["ecmp_mbytes"] == pytest.approx(1.8 * UNIT / 1e6)


def test_a_plan_without_link_loads_has_no_headline(sql):
    (h,) = sql(q.routing_summary("P9"))
    assert h["links"] == 0 and h["ecmp_link"] is None and h["times"] is None
    assert sql(q.ecmp_overloads("P9")) == []
