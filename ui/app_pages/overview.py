"""Overview: cluster health at a glance."""

from __future__ import annotations

import altair as alt
import streamlit as st

from c4.ui.data import query, query_one, resolution
from c4.ui.queries import overview as q
from c4.ui.sql import resolution_note
from c4.ui.widgets import (
    SEVERITY_LABELS,
    empty,
    guarded,
    heatmap,
    lines,
    pandas,
    severity_scale,
    window_picker,
)

st.title("Cluster overview")


@st.fragment(run_every=10)
@guarded
def health() -> None:
    """Live: inventory counts, the node x component grid and open faults by class."""
    counts = query_one(q.inventory_counts())
    if not counts or not (counts["nodes"] or counts["active_faults"]):
        empty(
            "No GPU or NIC samples in the store yet.",
            "Start agents (`c4 agent --collector ...`) or `make demo`; this page fills in as rows arrive.",
        )
        return
    c = st.columns(5)
    c[0].metric("Nodes", counts["nodes"])
    c[1].metric("GPUs", counts["gpus"])
    c[2].metric("NIC ports", counts["nic_ports"])
    c[3].metric("Active faults", counts["active_faults"])
    newest = counts["newest_gpu_sample"] or counts["newest_port_sample"]
    c[4].metric("Newest sample (UTC)", newest.strftime("%H:%M:%S") if newest else "-")
    grid = query(q.health_grid())
    left, right = st.columns([3, 1])
    with left:
        st.subheader(
            "Health grid",
            help="Each cell is a GPU or NIC port (plus the node itself), coloured by its worst open fault.",
        )
        if grid.height:
            chart = heatmap(
                grid,
                "node",
                "component",
                "severity",
                ["node", "component", "status", "summary", "faults", "acknowledged"],
                x_sort=alt.EncodingSortField("node_pos"),
                y_sort=alt.EncodingSortField("pos"),
                scale=severity_scale(),
                height=max(220, 16 * grid["component"].n_unique()),
            )
            st.altair_chart(chart, width="stretch")
            st.caption(" · ".join(f"{i}: {name}" for i, name in enumerate(SEVERITY_LABELS)))
    with right:
        st.subheader("Open faults")
        by_class = query(q.faults_by_class())
        if by_class.height:
            for row in by_class.iter_rows(named=True):
                st.metric(f"{row['fault_class']} ({row['state']})", row["faults"])
            st.page_link("app_pages/faults.py", label="Open the Faults page", icon=":material/report:")
        else:
            st.success("No open faults.", icon=":material/check_circle:")
    bad = grid.filter(grid["severity"] > 0).sort("severity", descending=True)
    if bad.height:
        st.markdown("**Components with open faults**")
        st.dataframe(
            pandas(bad.select("node", "component", "status", "faults", "acknowledged", "summary")),
            hide_index=True,
        )


@guarded
def trends(window_s: float) -> None:
    """GPU utilization and bus bandwidth over the window, and the jobs running."""
    util_res = resolution("gpu_samples", window_s)
    coll_res = resolution("nccl_collectives", window_s)
    util = query(q.utilization_series(window_s, util_res))
    bw = query(q.busbw_series(window_s, coll_res))
    a, b = st.columns(2)
    with a:
        if util.height:
            st.altair_chart(
                lines(util, "t", ["mean_util_pct", "min_util_pct"], "GPU utilization", "%"),
                width="stretch",
            )
        else:
            empty("No GPU samples in this window.")
    with b:
        if bw.height:
            st.altair_chart(
                lines(
                    bw, "t", ["mean_busbw_gbs", "min_busbw_gbs"], "Collective bus bandwidth per rank", "GB/s"
                ),
                width="stretch",
            )
        else:
            empty("No NCCL collectives in this window.", "Jobs report them through NCCL Inspector.")
    st.caption(
        f"GPU utilization: {resolution_note(window_s, util_res)} "
        f"Bus bandwidth and jobs: {resolution_note(window_s, coll_res)}"
    )
    st.subheader("Jobs and their ranks")
    jobs = query(q.jobs(window_s, coll_res))
    if jobs.height:
        st.dataframe(pandas(jobs), hide_index=True, width="stretch")
    else:
        empty("No jobs seen in this window.")


health()
trends(window_picker("overview-window"))
