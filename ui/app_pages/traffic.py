"""Traffic: the fabric's link loads under ECMP, the current C4P plan and the spraying bound; the plan's connections."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from c4.ui.data import query, query_one
from c4.ui.queries import traffic as q
from c4.ui.widgets import empty, guarded, pandas

ROUTINGS = {"C4P plan": "plan", "ECMP": "ecmp", "ideal spraying": "spray"}

st.title("Traffic")


@guarded
def page() -> None:
    """Pick a plan (newest first), compare routings, draw the fabric, list the connections."""
    plans = query(q.plans())
    if not plans.height:
        empty(
            "No traffic plans stored yet.",
            "Run `c4 plan --topology T.yaml --job J.yaml --collector HOST:PORT` (the demo stores one for its cluster).",
        )
        return
    plan_id = st.selectbox("Plan", plans["plan_id"].to_list(), key="traffic-plan")
    info = plans.filter(pl.col("plan_id") == plan_id).row(0, named=True)
    summary = query_one(q.routing_summary(plan_id))
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
    if summary.get("links"):
        degraded = query(q.degraded_links(plan_id))
        if degraded.height:
            st.warning(
                f"{degraded.height} link(s) had less than their nominal capacity when this plan was made (degraded or down); the plan counts them at that capacity.",
                icon=":material/warning:",
            )
            st.dataframe(pandas(degraded), hide_index=True)
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
