"""Jobs: per training job, actual vs ideal step time, what costs it (worker, stage, op type), causes and victims."""

from __future__ import annotations

import altair as alt
import streamlit as st

from c4.ui.data import query
from c4.ui.queries import jobs as q
from c4.ui.widgets import empty, guarded, pandas, window_picker

#: Colours of the roles in the cause/victim grid.
ROLE_SCALE = alt.Scale(domain=["cause", "victim", "ok"], range=["#c62828", "#f9a825", "#2e7d32"])

st.title("Jobs")


@guarded
def page(window_s: float) -> None:
    """The job list, then the chosen job's step time, its breakdown and its cause/victim picture."""
    jobs = query(q.jobs(window_s))
    if not jobs.height:
        empty(
            "No training-step traces in the store.",
            "A job exports them (docs/step-trace.md) to a directory the agent's `step_trace` sampler reads "
            "(`trace_dir`); C4D then attributes each job's step time in every diagnosis pass.",
        )
        return
    st.dataframe(
        pandas(jobs),
        hide_index=True,
        column_config={"slowdown_frac": st.column_config.NumberColumn("slowdown", format="percent")},
    )
    job = st.selectbox("Job", jobs["job"].to_list(), key="job-id")
    row = jobs.filter(jobs["job"] == job).row(0, named=True)
    summary(row)
    steps(job, window_s, row["ideal_step_s"])
    causes(job, window_s)
    parts(job)


def summary(row: dict) -> None:
    """Actual vs ideal step time and what the difference costs."""
    c = st.columns(4)
    actual, ideal, frac = row["actual_step_s"], row["ideal_step_s"], row["slowdown_frac"]
    c[0].metric("Actual step (median)", f"{actual:.3f} s" if actual is not None else "-")
    c[1].metric("Ideal step (replayed)", f"{ideal:.3f} s" if ideal is not None else "-")
    c[2].metric("Slowdown", f"{frac:+.1%}" if frac is not None else "-")
    c[3].metric("Open causes", row["open_causes"])
    if row["attributed"] is None:
        st.info(
            "Not attributed yet: C4D needs at least three complete steps of every rank of the job in its window.",
            icon=":material/hourglass_empty:",
        )
    else:
        st.caption(
            f"Attributed over {row['steps']} steps at {row['attributed']} (UTC). Ideal: every op at its peers' "
            "typical duration, replayed through the step's dependencies (a collective ends when its last member "
            "arrives, a recv waits for its send, a rank's ops run in order)."
        )


def steps(job: str, window_s: float, ideal_s: float | None) -> None:
    """Each step's actual time, with the ideal as a line."""
    df = query(q.step_times(job, window_s))
    if not df.height:
        return
    chart = (
        alt.Chart(pandas(df), title="Step time (s): actual per step, ideal dashed")
        .mark_line(point=True)
        .encode(
            x=alt.X("step:Q", axis=alt.Axis(format="d", tickMinStep=1)),
            y=alt.Y("step_s:Q", title="s"),
            tooltip=["step", "step_s", "ranks"],
        )
    )
    if ideal_s is not None:
        rule = (
            alt.Chart(pandas(df.head(1)))
            .mark_rule(strokeDash=[6, 4], color="#2e7d32")
            .encode(y=alt.datum(ideal_s))
        )
        chart = chart + rule
    st.altair_chart(chart.properties(height=220), width="stretch")


def causes(job: str, window_s: float) -> None:
    """The findings of the job (what each costs, who only waited on it) and the rank grid coloured by role."""
    st.subheader(
        "Causes and victims", help="A cause is blamed; ranks that only waited on it are its victims."
    )
    found = query(q.findings(job))
    if not found.height:
        empty("No open findings for this job.")
    else:
        st.dataframe(
            pandas(found),
            hide_index=True,
            column_config={
                "slowdown_frac": st.column_config.NumberColumn("costs", format="percent"),
                "summary": st.column_config.TextColumn("summary", width="large"),
            },
        )
    grid = query(q.roles(job, window_s))
    if grid.height:
        chart = (
            alt.Chart(pandas(grid), title="Ranks by pipeline stage and replica")
            .mark_rect(stroke="white")
            .encode(
                x=alt.X("replica:N", sort=alt.EncodingSortField("rank"), axis=alt.Axis(labelAngle=0)),
                y=alt.Y("pp_stage:N", title="pipeline stage"),
                color=alt.Color("role:N", scale=ROLE_SCALE),
                tooltip=["rank_name", "pp_stage", "dp_rank", "tp_rank", "role", "blamed_for"],
            )
        )  # no fixed height: a band scale given one collapses in Streamlit's Vega; bands size themselves
        st.altair_chart(chart, width="stretch")
        counts = grid["role"].value_counts()
        n = {r["role"]: r["count"] for r in counts.iter_rows(named=True)}
        st.caption(
            f"{n.get('cause', 0)} rank(s) blamed, {n.get('victim', 0)} only waited on a cause (victims)."
        )


def parts(job: str) -> None:
    """The step time each worker, pipeline stage and op type costs (actual - ideal, split)."""
    st.subheader(
        "Where the step time goes", help="Each part's cost: how much shorter the step is without its excess."
    )
    tabs = st.tabs(["By worker", "By stage", "By op type"])
    for tab, scope, label in zip(tabs, ("worker", "stage", "op"), ("part", "part", "op"), strict=True):
        with tab:
            df = query(q.breakdown(job, scope))
            if not df.height:
                empty("No attribution stored for this job yet.")
                continue
            st.altair_chart(
                alt.Chart(pandas(df))
                .mark_bar()
                .encode(
                    x=alt.X("cost_s:Q", title="cost (s per step)"),
                    y=alt.Y(f"{label}:N", sort="-x", title=None),
                    tooltip=[label, "cost_s", "share"],
                )
                .properties(height=max(120, 22 * df.height)),
                width="stretch",
            )
            st.dataframe(
                pandas(df.drop([c for c in df.columns if df[c].null_count() == df.height])), hide_index=True
            )


page(window_picker("jobs-window"))
