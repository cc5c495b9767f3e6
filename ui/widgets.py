"""Shared page furniture: the collector-down banner, empty-store hints, window pickers and Altair charts."""

from __future__ import annotations

import functools
import itertools

import altair as alt
import polars as pl
import streamlit as st

from c4.query import QueryError
from c4.ui.data import CollectorDown, collector_address

#: Window choices (label -> seconds) for pages that look back in time.
#: Windows beyond an hour read the rollups (``c4.ui.sql.resolution_for``).
WINDOWS_S: dict[str, float] = {
    "5 min": 300,
    "15 min": 900,
    "1 h": 3600,
    "6 h": 21600,
    "1 day": 86400,
    "7 days": 7 * 86400,
}

#: Colours of fault severities (0 healthy .. 4 hang), shared by every grid and table.
SEVERITY_COLOURS = ["#2e7d32", "#f9a825", "#ef6c00", "#c62828", "#6a1b9a"]
SEVERITY_LABELS = ["healthy", "congestion/application", "slow", "hardware", "hang"]


def guarded(fn):
    """Run a page or fragment body; an unreachable collector becomes a banner with a retry button."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CollectorDown as exc:
            collector_down(str(exc))
        except QueryError as exc:
            st.error(f"The collector refused a dashboard query: {exc}", icon=":material/error:")

    return wrapper


_RETRY_KEYS = itertools.count()


def collector_down(detail: str) -> None:
    """The banner shown when the collector cannot be reached."""
    st.error(
        f"**Collector unreachable at `{collector_address()}`.** The dashboard reads everything through "
        "the collector's Query RPC; start it (`c4 collector` or `make demo`) or check the address given "
        f"to `c4 ui --collector`.\n\n`{detail}`",
        icon=":material/cloud_off:",
    )
    # every banner of a run needs its own key (id() of a detail string can be reused within a run);
    # clicking any of them reruns the script, which is the retry
    if st.button("Retry", key=f"retry-{next(_RETRY_KEYS)}", type="primary"):
        st.rerun()


def empty(what: str, hint: str = "") -> None:
    """A friendly note for an empty store or table."""
    st.info(f"{what}{'  ' + hint if hint else ''}", icon=":material/hourglass_empty:")


def window_picker(key: str, default: str = "15 min") -> float:
    """A look-back window selector; returns seconds."""
    labels = list(WINDOWS_S)
    label = st.segmented_control(
        "Window", labels, default=default, key=key, help="Look back from the newest sample"
    )
    return WINDOWS_S[label or default]


def pandas(df: pl.DataFrame):
    """A polars frame as pandas for Altair (display only: aggregation already happened in DuckDB)."""
    return df.to_pandas()


def severity_scale() -> alt.Scale:
    """Colour scale for severity 0..4."""
    return alt.Scale(domain=[0, 1, 2, 3, 4], range=SEVERITY_COLOURS)


def heatmap(
    df: pl.DataFrame,
    x: str,
    y: str,
    colour: str,
    tooltip: list[str],
    *,
    x_sort=None,
    y_sort=None,
    scale: alt.Scale | None = None,
    title: str = "",
    height: int = 300,
    highlight: str | None = None,
) -> alt.Chart:
    """A rect heatmap; ``highlight`` names a boolean column whose cells get a thick red outline."""
    base = alt.Chart(pandas(df), title=title).encode(
        x=alt.X(f"{x}:O", sort=x_sort, axis=alt.Axis(labelOverlap=True)),
        y=alt.Y(f"{y}:O", sort=y_sort, axis=alt.Axis(labelOverlap="greedy", labelLimit=160)),
        tooltip=tooltip,
    )
    if colour == "severity":  # discrete: one legend entry per severity level
        colour_enc = alt.Color(
            "severity:O",
            scale=severity_scale(),
            legend=alt.Legend(title="worst fault", labelExpr=f"{SEVERITY_LABELS}[datum.value]"),
        )
    else:
        colour_enc = alt.Color(f"{colour}:Q", scale=scale or alt.Scale(scheme="viridis"))
    chart = base.mark_rect().encode(color=colour_enc)
    if highlight:
        outline = (
            base.mark_rect(fill=None, stroke="#d50000", strokeWidth=2.5)
            .transform_filter(f"datum.{highlight}")
            .encode()
        )
        chart = chart + outline
    return chart.properties(height=height)


def lines(df: pl.DataFrame, x: str, ys: list[str], title: str = "", y_title: str = "", height: int = 220):
    """Several numeric columns over time as one multi-line chart."""
    long = df.select(x, *ys).unpivot(index=x, on=ys, variable_name="series", value_name="value")
    return (
        alt.Chart(pandas(long), title=title)
        .mark_line(point=False)
        .encode(
            x=alt.X(f"{x}:T", title=None),
            y=alt.Y("value:Q", title=y_title),
            color=alt.Color("series:N", legend=alt.Legend(orient="bottom")),
            tooltip=[f"{x}:T", "series:N", alt.Tooltip("value:Q", format=".3~f")],
        )
        .properties(height=height)
    )


def series_by(df: pl.DataFrame, x: str, y: str, by: str, title: str = "", height: int = 200):
    """One numeric column over time, one line per value of ``by``."""
    return (
        alt.Chart(pandas(df), title=title)
        .mark_line()
        .encode(
            x=alt.X(f"{x}:T", title=None),
            y=alt.Y(f"{y}:Q"),
            color=alt.Color(f"{by}:N", legend=alt.Legend(orient="bottom")),
            tooltip=[f"{x}:T", f"{by}:N", alt.Tooltip(f"{y}:Q", format=".3~f")],
        )
        .properties(height=height)
    )
