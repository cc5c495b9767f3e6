"""Faults: open and recent faults; one fault's evidence, timeline and actions; acknowledge and resolve;
holds on remediation, set and released here."""

from __future__ import annotations

import json

import altair as alt
import streamlit as st

from c4.query import QueryError
from c4.ui.data import query, query_one, query_table
from c4.ui.fault_admin import AdminUnavailable, change_hold, current_holds, set_fault_state
from c4.ui.queries import collectives as qc
from c4.ui.queries import faults as q
from c4.ui.widgets import empty, guarded, heatmap, lines, pandas, series_by

STATE_FILTERS = {
    "Open and acknowledged": ("open", "acknowledged"),
    "Open": ("open",),
    "Resolved": ("resolved",),
    "All": ("open", "acknowledged", "resolved"),
}

st.title("Faults")


@st.fragment(run_every=10)
@guarded
def fault_table(states: tuple[str, ...]) -> None:
    """Live list of faults in the chosen states."""
    faults = query(q.fault_list(states))
    if not faults.height:
        if query_one("SELECT count(*) AS n FROM faults")["n"]:
            empty("No faults in this state.", "Pick another filter above.")
        else:
            empty(
                "No faults recorded yet.",
                "C4D runs inside the collector (diagnose_interval_s) and writes what it finds here.",
            )
        return
    st.dataframe(
        pandas(faults.drop("severity")),
        hide_index=True,
        column_config={
            "confidence": st.column_config.ProgressColumn(
                "confidence", min_value=0, max_value=1, format="%.2f"
            ),
            "summary": st.column_config.TextColumn("summary", width="large"),
        },
    )


@guarded
def detail(states: tuple[str, ...]) -> None:
    """The chosen fault: summary, evidence, timeline, actions and the operator buttons."""
    faults = query(q.fault_list(states))
    if not faults.height:
        return
    ids = faults["fault_id"].to_list()
    labels = {
        r["fault_id"]: f"[{r['state']}] {r['component']}: {r['detector']} ({r['fault_class']})"
        for r in faults.iter_rows(named=True)
    }
    fault_id = st.selectbox("Fault", ids, format_func=lambda f: labels.get(f, f), key="fault-id")
    row = query_one(q.fault_detail(fault_id))
    if not row:
        return
    st.subheader(row["summary"])
    c = st.columns(5)
    c[0].metric("State", row["state"])
    c[1].metric("Class", row["fault_class"])
    c[2].metric("Confidence", f"{row['confidence']:.2f}")
    c[3].metric("Recommended action", row["action"])
    c[4].metric("Component", row["component"])
    st.caption(
        f"Detector `{row['detector']}` · first seen {row['first_seen']} · last seen {row['last_seen']} · "
        f"updated {row['ts']} (UTC) · fault id `{fault_id}`"
    )
    operator_buttons(fault_id, row["state"])
    reached = recovery_summary(fault_id)
    tab_ev, tab_rec, tab_time, tab_act = st.tabs(["Evidence", "Recovery", "Timeline", "Actions and history"])
    with tab_ev:
        evidence(row)
    with tab_rec:
        recovery(fault_id, reached)
    with tab_time:
        events = query(q.timeline(row["node"], row["first_seen"], row["last_seen"]))
        if events.height:
            st.dataframe(pandas(events), hide_index=True)
        else:
            empty("No events on this node around the onset.")
    with tab_act:
        actions = query(q.fault_actions(fault_id))
        if actions.height:
            st.dataframe(pandas(actions), hide_index=True)
        else:
            empty(
                "No alerts sent and no isolation run for this fault.",
                "Alert sinks are configured in [collector].",
            )
        st.markdown("**State history**")
        st.dataframe(pandas(query(q.fault_history(fault_id))), hide_index=True)


#: The stages the recovery summary line names (a dry run stands for its stage, marked as such).
SUMMARY_STAGES = ("onset", "detected", "alerted", "isolated", "restarted", "recovered")


def recovery_summary(fault_id: str) -> set[str]:
    """One line above the tabs: which recovery stages the fault reached; returns the stages stored."""
    stages = query(q.recovery_timeline(fault_id))
    reached = set(stages["stage"].to_list()) if stages.height else set()

    def mark(s: str) -> str:
        if s in reached:
            return f"{s} ✓"
        return f"{s} (dry run)" if s + "_dry_run" in reached else f"{s} ·"

    st.markdown("**Recovery timeline** · " + " → ".join(mark(s) for s in SUMMARY_STAGES))
    return reached


def recovery(fault_id: str, reached: set[str]) -> None:
    """The fault's recovery timeline: each stage reached, when, how long after onset, and what showed it."""
    stages = query(q.recovery_timeline(fault_id))
    if not stages.height:
        empty("No recovery stages stored for this fault yet.")
        return
    st.dataframe(
        pandas(stages),
        hide_index=True,
        column_config={"since_onset_s": st.column_config.NumberColumn("since onset (s)", format="%.1f")},
    )
    missing = [s for s in SUMMARY_STAGES[2:] if s not in reached and s + "_dry_run" not in reached]
    if missing:
        st.caption(
            "Not reached: " + ", ".join(missing) + ". Alerting needs a sink ([collector] alert_webhook_urls, "
            "alertmanager_url or slack_webhook_url); isolation and restart need isolation_command and restart, "
            "and run for real only with isolation_dry_run / restart_dry_run = false (a dry run is shown but "
            "counts as neither); restart and recovery are also observed in the job's collectives."
        )


def operator_buttons(fault_id: str, state: str) -> None:
    """Acknowledge / resolve through the collector's fault admin RPC (when the collector offers it)."""
    note = st.text_input("Note (optional)", key=f"note-{fault_id}", placeholder="ticket, who, why")
    a, b, _ = st.columns([1, 1, 4])
    ack = a.button(
        "Acknowledge", disabled=state != "open", key=f"ack-{fault_id}", icon=":material/visibility:"
    )
    res = b.button("Resolve", disabled=state == "resolved", key=f"res-{fault_id}", icon=":material/task_alt:")
    if not (ack or res):
        return
    new_state = "acknowledged" if ack else "resolved"
    try:
        set_fault_state(fault_id, new_state, note)
    except AdminUnavailable as exc:
        st.warning(f"Acknowledge/resolve is not available on this collector: {exc}", icon=":material/block:")
        return
    except QueryError as exc:
        st.error(f"The collector refused the update: {exc}")
        return
    st.cache_data.clear()
    st.toast(f"{fault_id}: {new_state}")
    st.rerun()


def evidence(row: dict) -> None:
    """What convinced the detector: its numbers, the component's time series, the connection matrix, its query."""
    try:
        numbers = json.loads(row["evidence_json"] or "{}")
    except ValueError:
        numbers = {"raw": row["evidence_json"]}
    left, right = st.columns([1, 2])
    with left:
        st.markdown("**Detector evidence**")
        st.json(numbers)
    with right:
        where = q.parse_component(row["component"])
        if "gpu" in where:
            df = query(q.gpu_evidence(where["node"], where["gpu"], row["first_seen"], row["last_seen"]))
            if df.height:
                for col in ("util_pct", "clock_sm_mhz", "temp_c"):
                    st.altair_chart(
                        series_by(df, "t", col, "series", f"{where['node']} {col}", 160), width="stretch"
                    )
        elif "device" in where:
            df = query(
                q.port_evidence(
                    where["node"], where["device"], where["port"], row["first_seen"], row["last_seen"]
                )
            )
            if df.height:
                st.altair_chart(
                    series_by(df, "t", "tx_gbps", "series", f"{where['node']} tx Gbit/s", 160),
                    width="stretch",
                )
                st.altair_chart(
                    series_by(df, "t", "rate_gbps", "series", "negotiated rate Gbit/s", 140), width="stretch"
                )
                st.altair_chart(
                    lines(
                        df.filter(df["series"] != "other ports (mean)"),
                        "t",
                        ["retransmits", "cnps_handled"],
                        "retransmits and CNPs (this port)",
                    ),
                    width="stretch",
                )
            connection_matrix(where["node"], where["device"], row)
    if row["evidence_sql"]:
        st.markdown("**The query that reproduces the evidence**")
        st.code(row["evidence_sql"], language="sql")
        try:
            table, truncated = query_table(row["evidence_sql"], max_rows=2000)
            st.dataframe(table.to_pandas(), hide_index=True, height=240)
            if truncated:
                st.caption("First 2000 rows.")
        except QueryError as exc:
            st.warning(f"The evidence query failed: {exc}")


def connection_matrix(node: str, device: str, row: dict) -> None:
    """The connection matrix of the communicators using the faulty port, blamed cells outlined."""
    comms = query(q.connections_through(node, device, row["first_seen"], row["last_seen"]))
    for comm in comms["comm_hash"].to_list()[:2]:
        m = query(qc.connection_matrix(comm, 120))
        if not m.height:
            continue
        by_node = m["sender"].n_unique() > 64
        if by_node:
            m = query(qc.connection_matrix(comm, 120, by_node=True))
        st.altair_chart(
            heatmap(
                m,
                "receiver",
                "sender",
                "vs_median",
                ["sender", "receiver", "gbps", "vs_median", "ports", "blamed"],
                x_sort=alt.EncodingSortField("receiver_pos"),
                y_sort=alt.EncodingSortField("sender_pos"),
                title=f"Connection throughput vs median, communicator {comm} (outlined: blamed port)",
                height=320,
                highlight="blamed",
            ),
            width="stretch",
        )


@guarded
def holds_panel() -> None:
    """Holds on remediation in force, and hold / release buttons (the collector decides who may)."""
    with st.expander("Remediation holds", expanded=True):
        job = st.text_input("Job (empty: cluster-wide)", key="hold-job", placeholder="e.g. train-3d")
        note = st.text_input("Why (kept with the hold)", key="hold-note", placeholder="ticket, who, why")
        a, b, _ = st.columns([1, 1, 4])
        hold = a.button("Hold remediation", key="hold-set", icon=":material/pause_circle:")
        release = b.button("Release", key="hold-release", icon=":material/play_circle:")
        if hold or release:
            try:
                st.success(change_hold(job.strip(), hold, note), icon=":material/check:")
            except AdminUnavailable as exc:
                st.warning(f"Holds are not available on this collector: {exc}", icon=":material/block:")
            except QueryError as exc:
                st.error(f"The collector refused the hold: {exc}")
        try:
            holds = current_holds()
        except AdminUnavailable as exc:
            st.caption(str(exc))
            return
        if holds:
            st.dataframe(holds, hide_index=True)
        else:
            st.caption("No holds: isolation and job restart run as configured.")
        st.caption(
            "While a job is held, its faults are still diagnosed and alerted; their isolation and restart are "
            "recorded as 'held' and run once when the hold lifts (if the fault is still open). Holds from the "
            "collector config (source 'config') lift only with a config change and a restart. Holding needs "
            "the operator role (`c4 faults hold` / `release` do the same)."
        )


holds_panel()
states = STATE_FILTERS[st.radio("Show", list(STATE_FILTERS), horizontal=True, key="fault-states")]
fault_table(states)
detail(states)
