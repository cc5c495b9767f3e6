"""Bandwidth: NIC port throughput against the nominal rate, retransmits and CNPs, per-rank bus bandwidth."""

from __future__ import annotations

import altair as alt
import streamlit as st

from c4.ui.data import query, resolution
from c4.ui.queries import bandwidth as q
from c4.ui.sql import resolution_note
from c4.ui.widgets import empty, guarded, heatmap, lines, pandas, window_picker

METRICS = {
    "negotiated rate (of nominal)": "rate_ratio",
    "tx utilization (of nominal rate)": "tx_util",
    "rx utilization (of nominal rate)": "rx_util",
    "tx vs cluster median": "tx_vs_median",
    "retransmits": "retransmits",
    "CNPs handled": "cnps_handled",
}

st.title("Bandwidth")


@guarded
def ports(window_s: float) -> None:
    """The port heatmap, the outliers table and one port's time series."""
    faults = query(q.port_faults())
    if faults.height:
        st.warning(
            "Open NIC port faults: "
            + "; ".join(
                f"**{r['component']}** ({r['detector']}, {r['state']})" for r in faults.iter_rows(named=True)
            ),
            icon=":material/warning:",
        )
    res = resolution("ib_port_samples", window_s)
    table = query(q.port_table(window_s, res))
    if not table.height:
        empty("No NIC port samples in this window.", "The agent's `nic` sampler reads /sys/class/infiniband.")
        return
    st.caption(f"Port throughput, retransmits and CNPs: {resolution_note(window_s, res)}")
    label = st.selectbox("Colour ports by", list(METRICS), key="bw-metric")
    metric = METRICS[label]
    low_is_bad = metric in ("rate_ratio", "tx_util", "rx_util", "tx_vs_median")
    scale = alt.Scale(scheme="redyellowgreen", reverse=not low_is_bad)
    st.altair_chart(
        heatmap(
            table,
            "node",
            "port_name",
            metric,
            [
                "node",
                "port_name",
                "tx_gbps",
                "rx_gbps",
                "rate_gbps",
                "nominal_gbps",
                "retransmits",
                "cnps_handled",
                "state",
            ],
            x_sort=alt.EncodingSortField("node_pos"),
            scale=scale,
            title=f"NIC ports: {label} over the window (one column per node)",
            height=max(200, 22 * table["port_name"].n_unique()),
        ),
        width="stretch",
    )
    worst = table.sort(
        ["rate_ratio", "tx_util", "retransmits"], descending=[False, False, True], nulls_last=True
    ).head(20)
    st.markdown("**Ports furthest below their nominal rate** (and their error counters)")
    st.dataframe(
        pandas(
            worst.select(
                "node",
                "port_name",
                "state",
                "rate_ratio",
                "tx_gbps",
                "rx_gbps",
                "rate_gbps",
                "nominal_gbps",
                "tx_util",
                "retransmits",
                "cnps_handled",
                "cnps_sent",
                "link_downs",
                "symbol_errors",
            )
        ),
        hide_index=True,
        column_config={
            "tx_util": st.column_config.ProgressColumn("tx_util", min_value=0, max_value=1, format="%.2f")
        },
    )
    series(window_s, res, worst.row(0, named=True))


@guarded
def series(window_s: float, res: str, first: dict) -> None:
    """All ports together, or one chosen port, over time (from ``res``: raw samples or a rollup)."""
    total = query(q.cluster_series(window_s, res))
    a, b = st.columns(2)
    if total.height:
        a.altair_chart(
            lines(total, "t", ["tx_gbps", "rx_gbps"], "All ports: throughput", "Gbit/s"), width="stretch"
        )
        b.altair_chart(
            lines(total, "t", ["retransmits", "cnps_handled"], "All ports: retransmits and CNPs", "events"),
            width="stretch",
        )
    c1, c2, c3 = st.columns(3)
    node = c1.text_input("Node", value=first["node"], key="bw-node")
    device = c2.text_input("Device", value=first["device"], key="bw-device")
    port = c3.number_input("Port", value=int(first["port"]), min_value=0, step=1, key="bw-port")
    one = query(q.port_series(window_s, node, device, int(port), res))
    if one.height:
        a, b = st.columns(2)
        a.altair_chart(
            lines(
                one,
                "t",
                ["tx_gbps", "rx_gbps", "rate_gbps"],
                f"{node} {device}p{port}: throughput vs rate",
                "Gbit/s",
            ),
            width="stretch",
        )
        b.altair_chart(
            lines(
                one,
                "t",
                ["retransmits", "cnps_handled"],
                f"{node} {device}p{port}: retransmits and CNPs",
                "events",
            ),
            width="stretch",
        )
    else:
        empty(f"No samples for {node} {device} port {port} in this window.")


@guarded
def ranks(window_s: float) -> None:
    """Per-rank collective bus bandwidth: a slow rank drags its whole communicator."""
    res = resolution("nccl_collectives", window_s)
    df = query(q.rank_busbw(window_s, res))
    st.subheader("Per-rank collective bus bandwidth")
    st.caption(resolution_note(window_s, res))
    if not df.height:
        empty("No NCCL collectives in this window.")
        return
    chart = (
        alt.Chart(pandas(df))
        .mark_bar()
        .encode(
            x=alt.X("rank:Q"),
            y=alt.Y("mean_busbw_gbs:Q", title="mean bus bandwidth GB/s"),
            color=alt.Color("comm_id:N", legend=alt.Legend(orient="bottom")),
            tooltip=[
                "comm_id",
                "rank",
                "node",
                "gpu",
                "gpu_from",
                "mean_busbw_gbs",
                "min_busbw_gbs",
                "collectives",
            ],
        )
        .properties(height=220)
    )
    st.altair_chart(chart, width="stretch")


window = window_picker("bw-window")
ports(window)
ranks(window)
