"""Collectives: rank x iteration durations and arrival skew; the connection matrix with the blamed cells."""

from __future__ import annotations

import altair as alt
import streamlit as st

from c4.ui.data import query, resolution
from c4.ui.queries import collectives as q
from c4.ui.sql import resolution_note
from c4.ui.widgets import empty, guarded, heatmap, pandas, window_picker

st.title("Collectives")


@guarded
def page(window_s: float) -> None:
    """Pick a communicator, then its heatmaps and connection matrix."""
    res = resolution("nccl_collectives", window_s)
    comms = query(q.communicators(window_s, res))
    if not comms.height:
        empty(
            "No NCCL collectives in this window.",
            "Jobs report them through NCCL Inspector (NCCL >= 2.28) read by the agent's `nccl_inspector` sampler.",
        )
        return
    st.dataframe(pandas(comms), hide_index=True)
    st.caption(
        f"Communicators: {resolution_note(window_s, res)} The iterations below are always raw: the newest ones "
        "within the window and the raw samples' span."
    )
    ids = comms["comm_id"].to_list()
    comm = st.selectbox("Communicator", ids, key="coll-comm")
    row = comms.filter(comms["comm_id"] == comm).row(0, named=True)
    ranks = int(row["ranks"] or 1)
    group = q.rank_group(ranks)
    iters = st.slider("Iterations", 10, 200, 40, step=10, key="coll-iters")
    last_seq = int(row["last_seq"]) if row["last_seq"] is not None else None
    grid = query(q.rank_iterations(comm, window_s, iters, group, last_seq))
    label = "rank" if group == 1 else f"rank (groups of {group}, worst shown)"
    if grid.height:
        a, b = st.columns(2)
        a.altair_chart(
            heatmap(
                grid,
                "iteration",
                "rank",
                "duration_ms",
                ["rank", "iteration", "duration_ms", "arrival_skew_ms"],
                y_sort=alt.EncodingSortField("rank"),
                title=f"Collective duration (ms) per {label} and iteration",
                height=min(640, max(240, 6 * grid["rank"].n_unique())),
            ),
            width="stretch",
        )
        if grid["arrival_skew_ms"].drop_nulls().len():
            b.altair_chart(
                heatmap(
                    grid,
                    "iteration",
                    "rank",
                    "arrival_skew_ms",
                    ["rank", "iteration", "duration_ms", "arrival_skew_ms"],
                    y_sort=alt.EncodingSortField("rank"),
                    scale=alt.Scale(scheme="orangered"),
                    title=f"Arrival skew (ms after the first rank) per {label}",
                    height=min(640, max(240, 6 * grid["rank"].n_unique())),
                ),
                width="stretch",
            )
        else:
            b.info("No collective start times (NCCL Inspector verbose mode) to compute arrival skew from.")
    rank_gpus(comm)
    matrix(comm, ranks)


@guarded
def rank_gpus(comm: str) -> None:
    """Which GPU each rank runs on: a rank's number alone does not say (sub-communicators, CUDA_VISIBLE_DEVICES)."""
    with st.expander("Ranks and their GPUs"):
        df = query(q.rank_gpus(comm))
        if not df.height:
            empty(
                "No identity known for this communicator's ranks.",
                "It comes from NCCL_DEBUG=INFO init lines (`nccl_debug_log` sampler), NCCL Inspector's pids "
                "and NVML's compute processes (`gpu` sampler).",
            )
            return
        unknown = df.filter(df["gpu"].is_null()).height
        if unknown:
            st.caption(f"{unknown} ranks on a GPU not known: detectors guess rank % GPUs per node for them.")
        st.dataframe(pandas(df), hide_index=True, width="stretch")


@guarded
def matrix(comm: str, ranks: int) -> None:
    """Sender x receiver throughput relative to the median; ports blamed by an open fault are outlined."""
    st.subheader("Connection matrix")
    by_node = st.toggle("Aggregate by node", value=ranks > 64, key="coll-by-node")
    window_s = st.select_slider(
        "Over the last",
        [30, 60, 120, 300, 900],
        value=120,
        key="coll-matrix-window",
        format_func=lambda s: f"{s} s",
    )
    m = query(q.connection_matrix(comm, window_s, by_node))
    if not m.height:
        empty(
            "No per-connection records for this communicator.",
            "They come from the C4 NCCL profiler plugin (`nccl_conn` sampler).",
        )
        return
    st.altair_chart(
        heatmap(
            m,
            "receiver",
            "sender",
            "vs_median",
            [
                "sender",
                "receiver",
                "gbps",
                "vs_median",
                "us_per_step",
                "wait_peer_ms_per_op",
                "ports",
                "blamed",
            ],
            x_sort=alt.EncodingSortField("receiver_pos"),
            y_sort=alt.EncodingSortField("sender_pos"),
            scale=alt.Scale(scheme="redyellowgreen", domainMid=1.0),
            title="Throughput vs the median connection (red: slow); outlined: a port an open fault blames",
            height=min(700, max(260, 10 * m["sender"].n_unique())),
            highlight="blamed",
        ),
        width="stretch",
    )
    blamed = m.filter(m["blamed"])
    if blamed.height:
        st.markdown("**Blamed connections**")
        st.dataframe(
            pandas(blamed.select("sender", "receiver", "gbps", "vs_median", "ports")), hide_index=True
        )


page(window_picker("coll-window"))
