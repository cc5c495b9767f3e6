"""Every dashboard page under Streamlit's AppTest against real collectors: filled by the twin, empty, and down."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import c4.ui
from c4.ui.widgets import WINDOWS_S

APP = Path(c4.ui.__file__).parent / "app.py"
PAGES = ["overview", "faults", "jobs", "goodput", "bandwidth", "collectives", "traffic", "sql"]
#: What each page must show of the injected faults (a degraded NIC port on host1 and an Xid 48 on host2).
SHOWS = {
    "overview": ["host1", "mlx5_2p1", "host2", "gpu3"],
    "faults": ["host1/mlx5_2p1", "host2/gpu3"],
    "jobs": ["train-3d", "node0/gpu5", "slow_worker", "train-3d/rank7"],  # the cause, and a victim it delayed
    # the pushed accounts (conftest.push_accounting) blame the NIC port and the slow worker C4D found
    "goodput": [
        "acct-3d",
        "acct-dp",
        "host1/mlx5_2p1",
        "node0/gpu5",
        "slow_worker",
        "unexplained",
        "Detected",
    ],
    "bandwidth": ["host1/mlx5_2p1"],
    "collectives": ["host1/mlx5_2p1", "host2/gpu3,bus_id"],  # and each rank's GPU, from its busId
    # the plan routes around the degraded port's link (fabric names); the job's history: the replan after a link died
    "traffic": ["host1/nic2p0", "Plan history", "link_down:leaf0->spine1", "plan-test · train · initial"],
    "sql": ["host1/mlx5_2p1", "host2/gpu3"],
}


def run_page(page: str, address: str, monkeypatch) -> AppTest:
    """Render one page of the app against ``address``."""
    monkeypatch.setenv("C4_UI_COLLECTOR", address)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py")
        at.run()
    return at


def page_text(at: AppTest) -> str:
    """Every text the page shows: markdown, captions, metrics, alerts, selectbox options and table cells."""
    parts: list[str] = []
    for kind in (
        "title",
        "subheader",
        "markdown",
        "caption",
        "info",
        "warning",
        "error",
        "success",
        "code",
        "json",
    ):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    for box in at.selectbox:
        parts += [str(o) for o in box.options]
    for df in at.dataframe:
        parts.append(df.value.to_csv())
    return "\n".join(parts)


@pytest.mark.parametrize("page", PAGES)
def test_page_shows_the_injected_faults(page, filled_collector, monkeypatch):
    at = run_page(page, filled_collector.address, monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    text = page_text(at)
    for needle in SHOWS[page]:
        assert needle in text, f"{page}: {needle!r} not shown"


def test_fault_page_shows_evidence_timeline_and_actions(filled_collector, monkeypatch):
    at = run_page("faults", filled_collector.address, monkeypatch)
    labels = at.selectbox(key="fault-id").options
    nic = next(i for i, o in enumerate(labels) if "host1/mlx5_2p1" in o and "nic_rate" in o)
    at.selectbox(key="fault-id").select_index(nic).run()
    assert not at.exception, [e.value for e in at.exception]
    text = page_text(at)
    assert "replace_cable" in text  # the recommended action
    assert "nominal_bps" in text  # the detector's numbers
    assert "nic event" in text  # the timeline holds the port's rate change
    assert "isolation" in text  # the action the collector took (a dry-run drain)
    xid = next(i for i, o in enumerate(labels) if "host2/gpu3" in o)
    at.selectbox(key="fault-id").select_index(xid).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Double Bit ECC" in page_text(at)  # the evidence query's gpu_events rows


@pytest.mark.parametrize("page", PAGES)
def test_page_on_an_empty_store_explains_instead_of_failing(page, empty_collector, monkeypatch):
    at = run_page(page, empty_collector.address, monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    if page != "sql":
        assert at.info, f"{page}: no explanation on an empty store"


@pytest.mark.parametrize("page", PAGES)
def test_page_with_the_collector_down_shows_a_banner_and_retry(page, down_address, monkeypatch):
    at = run_page(page, down_address, monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    assert any("Collector unreachable" in e.value for e in at.error), f"{page}: no banner"
    assert any(b.label == "Retry" for b in at.button), f"{page}: no retry button"


def test_acknowledge_then_resolve_from_the_faults_page(filled_collector, monkeypatch):
    from c4.query import query_arrow

    at = run_page("faults", filled_collector.address, monkeypatch)
    labels = at.selectbox(key="fault-id").options
    pick = next(i for i, o in enumerate(labels) if "nic_retrans" in o)
    at.selectbox(key="fault-id").select_index(pick).run()
    fid = at.selectbox(key="fault-id").value
    at.text_input(key=f"note-{fid}").input("TICKET-7 cable swap").run()
    at.button(key=f"ack-{fid}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.button(key=f"res-{fid}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    states, _ = query_arrow(
        filled_collector.address, f"SELECT DISTINCT state FROM faults WHERE fault_id = '{fid}'"
    )
    assert {"acknowledged", "resolved"} <= set(states.column("state").to_pylist())
    acts, _ = query_arrow(
        filled_collector.address,
        f"SELECT fault_state, detail, target FROM actions WHERE fault_id = '{fid}' AND sink = 'operator'",
    )
    rows = acts.to_pylist()
    assert {r["fault_state"] for r in rows} >= {"acknowledged", "resolved"}
    assert any("TICKET-7" in r["detail"] for r in rows) and all(r["target"] == "c4 ui" for r in rows)


def test_hold_and_release_remediation_from_the_faults_page(empty_collector, monkeypatch):
    from c4.faults import list_holds

    at = run_page("faults", empty_collector.address, monkeypatch)
    assert "No holds: isolation and job restart run as configured." in page_text(at)
    at.text_input(key="hold-job").input("train-9").run()
    at.text_input(key="hold-note").input("TICKET-9 firmware").run()
    at.button(key="hold-set").click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = page_text(at)
    assert "remediation held job train-9" in text
    assert "train-9,operator,c4 ui,TICKET-9 firmware" in text  # the holds table, read back from the collector
    assert [(h.job, h.by) for h in list_holds(empty_collector.address).holds] == [("train-9", "c4 ui")]
    at.button(key="hold-release").click().run()
    assert "remediation released job train-9" in page_text(at)
    assert list(list_holds(empty_collector.address).holds) == []


def test_goodput_page_figures_of_one_job(filled_collector, monkeypatch):
    at = run_page("goodput", filled_collector.address, monkeypatch)
    at.selectbox(key="goodput-job").select("acct-3d").run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["ETTR"] == "76.7%"  # 1380 productive s of 1800 (goodput_rows.py)
    assert metrics["GPU-hours lost"] == "1.87"  # 420 s x 16 GPUs
    assert metrics["Time lost"] == "7.0 min"
    text = page_text(at)
    assert "**hung** 0.27 GPU-h (60 s)" in text and "**slowed** 0.53 GPU-h (2.0 min)" in text
    tables = {tuple(df.value.columns): df.value for df in at.dataframe}
    causes = next(v for k, v in tables.items() if "category" in k)
    assert set(causes["fault_class"]) == {"hardware", "slow_worker"}  # acct-dp's unexplained time is not its
    worst = next(v for k, v in tables.items() if "summary" in k)
    assert worst["component"].tolist() == ["host1/mlx5_2p1", "node0/gpu5"]  # costliest first


def test_goodput_page_opens_a_fault_on_the_faults_page(filled_collector, monkeypatch):
    from c4.query import query_arrow

    t, _ = query_arrow(
        filled_collector.address,
        "SELECT DISTINCT fault_id FROM job_accounting WHERE job = 'acct-3d' AND component = 'node0/gpu5'",
    )
    (fid,) = t.column("fault_id").to_pylist()
    at = run_page("goodput", filled_collector.address, monkeypatch)
    at.selectbox(key="goodput-fault").select(fid).run()
    at.button(key="goodput-open-fault").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Faults"]
    assert at.radio(key="fault-states").value == "All"
    assert at.selectbox(key="fault-id").value == fid
    assert "node0/gpu5" in at.metric[-1].value  # the Component metric of the chosen fault


def test_traffic_page_shows_the_jobs_plan_history_and_the_chosen_plans_loads(filled_collector, monkeypatch):
    at = run_page("traffic", filled_collector.address, monkeypatch)
    assert at.selectbox(key="traffic-plan").value == "plan-test-2"  # the newest: the replan
    tables = {tuple(df.value.columns): df.value for df in at.dataframe}
    hist = next(v for k, v in tables.items() if "moved pieces" in k)
    assert hist["plan"].tolist() == ["plan-test", "plan-test-2"]  # oldest first
    assert hist["reason"].tolist() == ["initial", "link_down"]
    assert hist["link"].tolist() == ["", "leaf0->spine1"]
    assert hist["moved pieces"].tolist()[0] == 0 and hist["moved pieces"].tolist()[1] > 0
    assert (hist["completion (ms)"] > 0).all()
    degraded = next(v for k, v in tables.items() if "nominal_gbps" in k).set_index("link")
    assert (
        degraded.loc["leaf0->spine1", "capacity_gbps"] == 0
    )  # the replan's fabric: the dead link at no capacity
    at.selectbox(key="traffic-plan").select("plan-test").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Plan `plan-test` ·" in c.value for c in at.caption)  # the chosen plan's loads and connections
    # the first plan was made with the spine link up: only the degraded NIC port's link is below nominal
    degraded = next(df.value for df in at.dataframe if "nominal_gbps" in df.value.columns)
    assert "leaf0->spine1" not in set(degraded["link"]) and "host1/nic2p0->leaf0" in set(degraded["link"])


@pytest.mark.parametrize(
    "page,key,table",
    [
        ("overview", "overview-window", "gpu_samples"),
        ("bandwidth", "bw-window", "ib_port_samples"),
        ("collectives", "coll-window", "nccl_collectives"),
    ],
)
def test_a_week_window_shows_the_faults_and_says_which_data_it_read(
    page, key, table, filled_collector, monkeypatch
):
    """The 7-day view on the twin's young store: rollups where the collector rolled some, raw rows where not
    (as on a lake); the page still shows what it shows at 15 minutes and its caption names the data read."""
    from c4.query import query_arrow
    from c4.ui.sql import pick_resolution, resolution_note, rollups_present

    week = WINDOWS_S["7 days"]
    monkeypatch.setenv("C4_UI_COLLECTOR", filled_collector.address)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state[key] = "7 days"
    at.run()
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    present, _ = query_arrow(filled_collector.address, rollups_present(table))
    note = resolution_note(week, pick_resolution(week, present.to_pylist()[0]))
    assert any(note in str(c.value) for c in at.caption), (note, [c.value for c in at.caption])
    text = page_text(at)
    for needle in SHOWS[page]:
        assert needle in text, f"{page} over 7 days: {needle!r} not shown"


def test_the_sql_console_shows_intervals_dates_at_infinity_lists_and_unions(empty_collector, monkeypatch):
    """Types polars, pandas or the CSV writer refuse are shown (and downloaded) as text, not an exception."""
    at = run_page("sql", empty_collector.address, monkeypatch)
    at.text_area[0].set_value(
        "SELECT INTERVAL 90 MINUTE AS i, '-infinity'::DATE AS d, [1, 2] AS l, {'a': 1} AS s, "
        "union_value(k := 3) AS u, '\\x01'::BLOB AS b, ['infinity'::DATE] AS ld, '24:00:00'::TIME AS t, 1 AS i"
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    shown = page_text(at)
    assert "01:30:00" in shown and "-infinity" in shown, shown
