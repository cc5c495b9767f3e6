"""Traffic: ECMP against a C4P plan in words, the job's plan history, link loads under each routing, connections."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from c4.ui.data import query, query_one
from c4.ui.queries import traffic as q
from c4.ui.widgets import empty, guarded, pandas

ROUTINGS = {"C4P plan": "plan", "ECMP": "ecmp", "ideal spraying": "spray"}
#: ECMP against the plan in every chart that sets them side by side.
VERSUS = alt.Scale(domain=["ECMP", "plan"], range=["#c62828", "#2e7d32"])
#: Where the ECMP figures come from, said once under the headline.
ECMP_SOURCE = (
    "ECMP is the switches' hash model over the plan's connections, with the QPs each job opens: `c4 plan` stores "
    "the mean over its `--seeds` hash seeds (per link here; the history averages each seed's busiest link), "
    "`make demo` the hashing its twin's switches do, for a host order chosen so that ECMP collides flows (the "
    "scenario's seed in deploy/examples/scenarios/demo.yaml); the twin runs ECMP, the plan is stored beside it."
)

st.title("Traffic")


@guarded
def page() -> None:
    """Pick a plan (newest first); ECMP against it in words; its job's plan history; routings, fabric, connections."""
    plans = query(q.plans())
    if not plans.height:
        empty(
            "No traffic plans stored yet.",
            "Run `c4 plan --topology T.yaml --job J.yaml --collector HOST:PORT`, or `make demo` (it stores one "
            "for its cluster).",
        )
        return
    labels = {r["plan_id"]: _plan_label(r) for r in plans.iter_rows(named=True)}
    plan_id = st.selectbox("Plan", list(labels), format_func=labels.get, key="traffic-plan")
    info = plans.filter(pl.col("plan_id") == plan_id).row(0, named=True)
    summary = query_one(q.routing_summary(plan_id))
    if summary.get("links"):
        headline(summary)
    c = st.columns(4)
    c[0].metric(
        "Spraying bound (ms per collective)",
        f"{(summary.get('bound_s') or 0) * 1e3:.2f}" if summary.get("links") else "-",
    )
    for col, (label, key) in zip(c[1:], ROUTINGS.items(), strict=True):
        value = summary.get(key)
        col.metric(f"{label}: max load / bound", f"{value:.3f}" if value is not None else "-")
    st.caption(
        f"Plan `{plan_id}` · created {info['created']} UTC · {info['connections'] or 0} connections in "
        f"{info['pieces'] or 0} pieces · 1.0 is the best any routing can do (ideal packet spraying's bound)."
    )
    plan_history(info["job"], plan_id)
    if summary.get("links"):
        degraded = query(q.degraded_links(plan_id))
        if degraded.height:
            st.warning(
                f"{degraded.height} link(s) had less than their nominal capacity when this plan was made (degraded or down); the plan counts them at that capacity.",
                icon=":material/warning:",
            )
            st.dataframe(pandas(degraded), hide_index=True)
        overloads(plan_id, summary)
        fabric(plan_id)
        busiest(plan_id)
    else:
        st.info("This plan has no link loads stored (plan_links); store plans with `c4 plan --collector`.")
    st.subheader("Connections in the plan")
    conns = query(q.connections(plan_id))
    if conns.height:
        st.dataframe(pandas(conns), hide_index=True)
    else:
        empty("No pieces stored for this plan.")


def _plan_label(row: dict) -> str:
    """A picker entry: the plan, its job, why it was made and when."""
    why = f" · {row['reason']}" if row.get("reason") else ""
    return f"{row['plan_id']} · {row['job'] or 'no job'}{why} · {row['created']:%Y-%m-%d %H:%M:%S}"


def headline(summary: dict) -> None:
    """ECMP against the plan in one sentence: ECMP's busiest link and how many times the plan's busiest it carries."""
    times, link = summary.get("times"), summary.get("ecmp_link")
    if times is None or link is None:
        return
    if times > 1.005:
        spread = summary.get("fabric_overloaded") or 0
        st.markdown(
            f"#### Under ECMP, link `{link}` carries {times:.2f} x what the plan puts on its busiest link\n"
            f"ECMP loads {spread} fabric link(s) beyond the plan's busiest; the plan spreads the same connections "
            "over the spines so that none is."
        )
    else:
        st.markdown(
            f"ECMP's busiest link `{link}` carries no more than the plan's busiest ({times:.2f} x): hashing "
            "happens not to collide these connections, and the plan gains nothing on them."
        )
    st.caption(ECMP_SOURCE)


@guarded
def plan_history(job: str | None, plan_id: str) -> None:
    """The job's plans in the order they were made: why, what moved, max load over the bound (plan and ECMP)."""
    st.subheader("Plan history")
    hist = query(q.history(job)) if job else pl.DataFrame()
    if not hist.height:
        empty(
            f"No plan history for job `{job or '?'}`.",
            "`c4 plan --collector` (reason initial or manual), `make demo` and the collector's replans after a "
            "link goes down or degrades write it (table plan_runs); plans stored before it existed have none.",
        )
        return
    st.caption(
        f"Job `{job}`: {hist.height} plan(s) since {hist['created'][0]:%Y-%m-%d %H:%M:%S} UTC, oldest first; "
        "choose a row to show that plan (the dashed line in the chart marks the one shown)."
    )
    table = hist.select(
        pl.col("created"),
        pl.col("plan_id").alias("plan"),
        pl.col("reason"),
        pl.col("fault_id").alias("fault"),
        pl.col("link"),
        pl.col("pieces"),
        pl.col("moved_pieces").alias("moved pieces"),
        pl.col("max_load_over_bound").round(3).alias("plan max load / bound"),
        pl.col("ecmp_over_bound").round(3).alias("ECMP max load / bound"),
        (pl.col("completion_s") * 1e3).round(2).alias("completion (ms)"),
        pl.col("applied"),
    )
    ids = hist["plan_id"].to_list()

    def choose() -> None:
        """Show the plan of the chosen row (runs before the next script run, so the picker can follow)."""
        rows = st.session_state["traffic-history"].selection.rows
        if rows:
            st.session_state["traffic-plan"] = ids[rows[0]]

    st.dataframe(
        pandas(table),
        hide_index=True,
        key="traffic-history",
        on_select=choose,
        selection_mode="single-row",
    )
    long = hist.select(
        "created", "plan_id", "reason", plan="max_load_over_bound", ECMP="ecmp_over_bound"
    ).unpivot(index=["created", "plan_id", "reason"], variable_name="routing", value_name="load_over_bound")
    base = alt.Chart(pandas(long), title="Max link load / bound of each plan, when it was made").encode(
        x=alt.X("created:T", title=None, axis=alt.Axis(format="%H:%M:%S")),
        y=alt.Y("load_over_bound:Q", title="max load / bound", axis=alt.Axis(format=".2f")),
        color=alt.Color("routing:N", scale=VERSUS, legend=alt.Legend(orient="bottom")),
        tooltip=["plan_id", "reason", "routing", alt.Tooltip("load_over_bound:Q", format=".3f"), "created:T"],
    )
    chosen = (
        alt.Chart(pandas(hist.filter(pl.col("plan_id") == plan_id).select("created")))
        .mark_rule(color="#37474f", strokeDash=[4, 4])
        .encode(x="created:T")
    )
    st.altair_chart(
        base.mark_line(interpolate="step-after") + base.mark_point(filled=True, size=80) + chosen,
        width="stretch",
    )


@guarded
def overloads(plan_id: str, summary: dict) -> None:
    """The fabric links ECMP loads beyond the plan's busiest link, beside the plan's load on each."""
    links = query(q.ecmp_overloads(plan_id))
    if not links.height:
        return
    st.subheader("Links ECMP overloads, and the plan's load on them")
    long = links.select("link", ECMP="ecmp_over_bound", plan="plan_over_bound").unpivot(
        index="link", variable_name="routing", value_name="load_over_bound"
    )
    chart = (
        alt.Chart(pandas(long))
        .mark_bar()
        .encode(
            y=alt.Y("link:N", sort=None, title=None),
            x=alt.X("load_over_bound:Q", title="load / bound"),
            yOffset="routing:N",
            color=alt.Color("routing:N", scale=VERSUS, legend=alt.Legend(orient="bottom")),
            tooltip=["link", "routing", alt.Tooltip("load_over_bound:Q", format=".3f")],
        )
        .properties(height=28 * 2 * links.height)
    )
    rule = (
        alt.Chart(pandas(pl.DataFrame({"x": [summary.get("plan") or 0.0]})))
        .mark_rule(color="black", strokeDash=[4, 4])
        .encode(x="x:Q")
    )
    st.altair_chart(chart + rule, width="stretch")
    st.caption(
        "Dashed: the plan's busiest link. Every link here carries more under ECMP than the plan's busiest."
    )


def _layout(df: pl.DataFrame) -> dict[str, tuple[float, float]]:
    """x, y of every switch: spines (and cores) on top, leaves below, each leaf's hosts under it."""
    switches = sorted(
        set(df.filter(pl.col("kind") == "switch")["a"]) | set(df.filter(pl.col("kind") == "switch")["b"])
    )
    leaves = sorted(set(df.filter(pl.col("kind") == "hosts")["a"]))
    upper = [s for s in switches if s not in leaves]
    pos = {}
    for i, s in enumerate(upper):
        pos[s] = ((i + 0.5) / max(1, len(upper)), 2.0)
    for i, s in enumerate(leaves):
        pos[s] = ((i + 0.5) / max(1, len(leaves)), 1.0)
        pos[f"hosts:{s}"] = ((i + 0.5) / max(1, len(leaves)), 0.0)
    return pos


@guarded
def fabric(plan_id: str) -> None:
    """Leaf/spine diagram: each switch pair (and each leaf's host links) coloured by load over the bound."""
    df = query(q.fabric(plan_id))
    routing = ROUTINGS[
        st.segmented_control("Routing", list(ROUTINGS), default="C4P plan", key="traffic-routing")
        or "C4P plan"
    ]
    pos = _layout(df)
    rows = []
    for r in df.iter_rows(named=True):
        a = pos.get(r["a"])
        b = pos.get(r["b"] if r["kind"] == "switch" else f"hosts:{r['a']}")
        if a and b:
            rows.append(
                {
                    "x": a[0],
                    "y": a[1],
                    "x2": b[0],
                    "y2": b[1],
                    "load_over_bound": r[routing],
                    "link": f"{r['a']} - {r['b']}"
                    if r["kind"] == "switch"
                    else f"{r['a']} host links (busiest)",
                    "capacity_gbps": r["capacity_gbps"],
                }
            )
    links = pl.DataFrame(rows)
    nodes = pl.DataFrame(
        [{"x": x, "y": y, "name": n.replace("hosts:", "hosts of ")} for n, (x, y) in pos.items()]
    )
    scale = alt.Scale(scheme="redyellowgreen", reverse=True, domain=[0.5, 1.0, 1.5], clamp=True)
    edges = (
        alt.Chart(pandas(links))
        .mark_rule(strokeWidth=3)
        .encode(
            x=alt.X("x:Q", axis=None),
            y=alt.Y("y:Q", axis=None, scale=alt.Scale(domain=[-0.3, 2.3])),
            x2="x2:Q",
            y2="y2:Q",
            color=alt.Color("load_over_bound:Q", scale=scale, title="load / bound"),
            tooltip=["link", alt.Tooltip("load_over_bound:Q", format=".3f"), "capacity_gbps"],
        )
    )
    dots = (
        alt.Chart(pandas(nodes))
        .mark_circle(size=220, color="#37474f")
        .encode(x="x:Q", y="y:Q", tooltip=["name"])
    )
    text = alt.Chart(pandas(nodes)).mark_text(dy=-14, fontSize=11).encode(x="x:Q", y="y:Q", text="name")
    st.altair_chart(
        (edges + dots + text).properties(height=360, title=f"Fabric link loads: {routing}"), width="stretch"
    )


@guarded
def busiest(plan_id: str) -> None:
    """The busiest links under each routing, side by side."""
    links = query(q.link_loads(plan_id)).head(24)
    long = links.unpivot(
        index=["link", "tier"],
        on=["plan", "ecmp", "spray"],
        variable_name="routing",
        value_name="load_over_bound",
    )
    chart = (
        alt.Chart(pandas(long), title="Busiest links: load over the spraying bound")
        .mark_bar()
        .encode(
            y=alt.Y("link:N", sort=None, title=None),
            x=alt.X("load_over_bound:Q", title="load / bound"),
            yOffset="routing:N",
            color=alt.Color("routing:N", legend=alt.Legend(orient="bottom")),
            tooltip=["link", "tier", "routing", alt.Tooltip("load_over_bound:Q", format=".3f")],
        )
        .properties(height=24 * 3 * max(1, links.height) // 2)
    )
    rule = (
        alt.Chart(pandas(pl.DataFrame({"x": [1.0]})))
        .mark_rule(color="black", strokeDash=[4, 4])
        .encode(x="x:Q")
    )
    st.altair_chart(chart + rule, width="stretch")


page()
