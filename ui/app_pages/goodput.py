"""Goodput: each job's ETTR over time, what the lost GPU-hours went to, the costliest faults, how fast faults recover."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from c4.ui.data import query, query_one
from c4.ui.queries import goodput as q
from c4.ui.widgets import empty, guarded, pandas, window_picker

ALL_JOBS = "All jobs"
#: Colours of the lost-time categories, shared by every chart of the page.
CATEGORY_SCALE = alt.Scale(
    domain=list(q.LOST_CATEGORIES), range=["#6a1b9a", "#ef6c00", "#c62828", "#f9a825", "#757575"]
)
#: Causes (fault class or component) shown in a bar chart; the table below it lists them all.
TOP_CAUSES = 15
#: The recovery chart's axis turns logarithmic when the longest time exceeds the median this many times.
SYMLOG_SPREAD = 20
#: The Faults page's widget keys this page presets before switching to it.
FAULTS_PAGE = "app_pages/faults.py"
FAULT_KEY = "fault-id"
FAULT_STATES_KEY = "fault-states"

st.title("Goodput")


@guarded
def page(window_s: float) -> None:
    """The job picker, then ETTR, lost GPU-hours by cause, the worst faults and the recovery distribution."""
    jobs = query(q.jobs())
    if not jobs.height:
        empty(
            "No job accounting yet.",
            "The collector fills `job_accounting` with each diagnosis pass (`diagnose_interval_s`): a job's "
            "productive, hung, slowed, restarting and redone time, from its collectives (NCCL Inspector) and "
            "its step trace when it has one. This page shows it once a pass has accounted a job.",
        )
        recovery(window_s, None)
        return
    names = jobs["job"].to_list()
    job = st.selectbox("Job", [ALL_JOBS, *names], key="goodput-job")
    job = None if job == ALL_JOBS else job
    totals = query_one(q.totals(window_s, job))
    if not totals.get("jobs"):
        empty(
            "No accounted time in this window.",
            f"The newest account ends at {jobs['end_ts'].max()} (UTC); pick a wider window.",
        )
        recovery(window_s, job)
        return
    summary(totals)
    if job is None:
        job_table(jobs)
    ettr(window_s, job)
    causes(window_s, job)
    worst(window_s, job)
    recovery(window_s, job)


def hours(x: float | None) -> str:
    """GPU-hours for a metric."""
    return "-" if x is None else f"{x:,.2f}"


def duration(s: float | None) -> str:
    """Seconds as a short human duration."""
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def summary(t: dict) -> None:
    """ETTR and lost GPU-hours over the window, as metrics."""
    c = st.columns(4)
    c[0].metric("ETTR", "-" if t["ettr"] is None else f"{t['ettr']:.1%}", help="productive time / wall time")
    c[1].metric("GPU-hours lost", hours(t["gpu_hours_lost"]))
    c[2].metric("Time lost", duration(t["lost_s"]))
    c[3].metric("Accounted wall time", duration(t["wall_s"]), help="summed over jobs")
    st.caption(
        f"{t['jobs']} job(s) accounted from {t['start']:%Y-%m-%d %H:%M:%S} to {t['end_ts']:%H:%M:%S} (UTC). ETTR (effective training time "
        "ratio) = productive time / wall time; GPU-hours lost = time lost x the job's GPUs."
    )


def job_table(jobs: pl.DataFrame) -> None:
    """Every job's whole account (job_goodput), worst ETTR first."""
    st.caption("Each job's whole account (whatever the window), worst ETTR first:")
    st.dataframe(
        pandas(jobs),
        hide_index=True,
        column_config={
            "ettr": st.column_config.ProgressColumn("ETTR", min_value=0, max_value=1, format="percent")
        },
    )


def ettr(window_s: float, job: str | None) -> None:
    """ETTR per time bucket, one line per job."""
    st.subheader("ETTR over time", help="Per bucket: productive seconds / accounted seconds in it.")
    df = query(q.ettr_series(window_s, job))
    if not df.height:
        empty("No accounted intervals in this window.")
        return
    chart = (
        alt.Chart(pandas(df))
        .mark_line(point=df.height <= 200, interpolate="step-after")
        .encode(
            x=alt.X("t:T", title=None),
            y=alt.Y("ettr:Q", title="ETTR", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            color=alt.Color("job:N", legend=alt.Legend(orient="bottom")),
            tooltip=[
                "t:T",
                "job:N",
                alt.Tooltip("ettr:Q", format=".1%"),
                alt.Tooltip("wall_s:Q", format=".0f"),
            ],
        )
        .properties(height=240)
    )
    st.altair_chart(chart, width="stretch")
    st.caption(f"{q.ettr_bucket_s(window_s)} s buckets.")


def causes(window_s: float, job: str | None) -> None:
    """Lost GPU-hours by category, and by fault class and component stacked by category."""
    st.subheader(
        "Lost GPU-hours by cause",
        help="hung: no progress while the run was alive; slowed: iterations longer than the normal period; "
        "restarting: from the last collective of a run to the first of the next; redone: work since the last "
        "checkpoint done again; unexplained: lost time no fault explains.",
    )
    cats = query(q.lost_by_category(window_s, job))
    by = query(q.lost_by_cause(window_s, job))
    if not by.height:
        st.success("No time lost in this window.", icon=":material/check_circle:")
        return
    st.markdown(
        " · ".join(
            f"**{r['category']}** {hours(r['gpu_hours_lost'])} GPU-h ({duration(r['lost_s'])})"
            for r in cats.iter_rows(named=True)
        )
    )
    left, right = st.columns(2)
    for col, key, title in ((left, "fault_class", "By fault class"), (right, "component", "By component")):
        top = (
            by.group_by(key)
            .agg(pl.col("gpu_hours_lost").sum().alias("total"))
            .sort("total", descending=True)
            .head(TOP_CAUSES)[key]
        )
        order = top.to_list()
        part = (
            by.filter(pl.col(key).is_in(order))
            .group_by(key, "category")
            .agg(pl.col("gpu_hours_lost").sum(), pl.col("lost_s").sum())
        )
        with col:
            # no fixed height: a band scale given one collapses in Streamlit's Vega; bands size themselves
            st.altair_chart(
                alt.Chart(pandas(part), title=title)
                .mark_bar()
                .encode(
                    x=alt.X("gpu_hours_lost:Q", title="GPU-hours lost", stack="zero"),
                    y=alt.Y(f"{key}:N", sort=order, title=None, axis=alt.Axis(labelLimit=220)),
                    color=alt.Color("category:N", scale=CATEGORY_SCALE, legend=alt.Legend(orient="bottom")),
                    tooltip=[
                        key,
                        "category",
                        alt.Tooltip("gpu_hours_lost:Q", format=".3f"),
                        alt.Tooltip("lost_s:Q", format=".0f"),
                    ],
                ),
                width="stretch",
            )
    with st.expander("Every cause"):
        st.dataframe(
            pandas(by),
            hide_index=True,
            column_config={
                "lost_s": st.column_config.NumberColumn("lost_s", format="%.1f"),
                "gpu_hours_lost": st.column_config.NumberColumn("GPU-hours lost", format="%.3f"),
            },
        )


def worst(window_s: float, job: str | None) -> None:
    """The faults that cost most, with their state and summary; a button opens one on the Faults page."""
    st.subheader(
        "Worst faults by cost", help="GPU-hours each fault's hung, slowed, restarting and redone time cost."
    )
    df = query(q.worst_faults(window_s, job))
    if not df.height:
        empty(
            "No fault cost time in this window.",
            "Lost time no fault explains is counted as unexplained above.",
        )
        return
    st.dataframe(
        pandas(df),
        hide_index=True,
        column_config={
            "gpu_hours_lost": st.column_config.NumberColumn("GPU-hours lost", format="%.3f"),
            **{c: st.column_config.NumberColumn(c, format="%.1f") for c in df.columns if c.endswith("_s")},
            "summary": st.column_config.TextColumn("summary", width="large"),
        },
    )
    ids = df["fault_id"].to_list()
    labels = {
        r["fault_id"]: f"{r['component']} ({r['fault_class']}): {hours(r['gpu_hours_lost'])} GPU-h"
        for r in df.iter_rows(named=True)
    }
    left, right = st.columns([3, 1])
    pick = left.selectbox("Fault", ids, format_func=lambda f: labels.get(f, f), key="goodput-fault")
    if right.button("Open on the Faults page", icon=":material/report:", key="goodput-open-fault"):
        st.session_state[FAULT_STATES_KEY] = "All"  # resolved faults are listed there too
        st.session_state[FAULT_KEY] = pick
        st.switch_page(FAULTS_PAGE)


def recovery(window_s: float, job: str | None) -> None:
    """How many faults reached each recovery stage and the distribution of their times after onset."""
    st.subheader(
        "Recovery timeline", help="Seconds from a fault's onset (its first anomalous sample) to each stage."
    )
    counts = query_one(q.recovery_counts(window_s, job))
    n = counts.get("faults") or 0
    if not n:
        empty(
            "No faults with their onset in this window.",
            "C4D records each fault's stages (detected, alerted, isolated, restarted, recovered) as it goes.",
        )
        return
    c = st.columns(len(q.RECOVERY_STAGES))
    for col, stage in zip(c, q.RECOVERY_STAGES, strict=True):
        med = counts[f"{stage}_median_s"]
        col.metric(
            f"{stage.capitalize()}",
            f"{counts[stage]} of {n}",
            help=f"faults that reached it; median {duration(med)}, max {duration(counts[f'{stage}_max_s'])} after onset",
        )
    times = query(q.recovery_times(window_s, job))
    if times.height:
        stages = list(q.RECOVERY_STAGES)
        spread = times["seconds"].max() > SYMLOG_SPREAD * max(times["seconds"].median(), 1.0)
        base = alt.Chart(pandas(times)).encode(
            y=alt.Y("stage:N", sort=stages, title=None),
            x=alt.X(
                "seconds:Q",
                title="seconds after onset" + (" (log scale)" if spread else ""),
                scale=alt.Scale(type="symlog" if spread else "linear"),
            ),
        )
        chart = base.mark_boxplot(extent="min-max", size=18) + base.mark_tick(
            color="#37474f", opacity=0.6
        ).encode(tooltip=["fault_id", "stage", alt.Tooltip("seconds:Q", format=".1f")])
        st.altair_chart(chart.properties(height=60 + 36 * times["stage"].n_unique()), width="stretch")
    meds = ", ".join(
        f"{stage} {duration(counts[f'{stage}_median_s'])}" for stage in q.RECOVERY_STAGES if counts[stage]
    )
    st.caption(
        f"{n} fault(s) with onset in the window; median time after onset: {meds or '-'}. "
        f"Dry runs (shown, counted as neither): isolation {counts['isolated_dry_run']}, "
        f"restart {counts['restarted_dry_run']}."
    )


page(window_picker("goodput-window", default="1 h"))
