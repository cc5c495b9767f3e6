"""Hardware detectors: pure functions from polars frames of collected tables to findings."""

from __future__ import annotations

import polars as pl

from c4.analytics.findings import Finding

THERMAL_BITS = 0x20 | 0x40 | 0x08  # SW thermal, HW thermal, HW slowdown
ACTION_BY_XID_ACTION = {"check_link": "replace_cable"}


def _ts_range(df: pl.DataFrame) -> tuple:
    return df["ts"].min(), df["ts"].max()


def xid_findings(gpu_events: pl.DataFrame) -> list[Finding]:
    """Every Xid and lost GPU, by catalogue category and action (application Xids are not hardware)."""
    out = []
    if gpu_events.is_empty():
        return out
    for (node, bus, kind, xid), g in gpu_events.group_by(
        ["node", "pci_bus_id", "kind", "xid"], maintain_order=True
    ):
        first, last = _ts_range(g)
        gpu = g["gpu_index"].drop_nulls()
        where = f"{node}/gpu{gpu[0]}" if len(gpu) else f"{node}/pci{bus}"
        category = g["category"][0] or "unknown"
        cls = "application" if category == "application" else "hardware"
        action = g["action"][0] or "investigate"
        label = "GPU lost" if kind == "gpu_lost" else f"Xid {xid} ({g['xid_name'][0]})"
        sources = sorted(set(g["source"].to_list()))
        out.append(
            Finding(
                detector="gpu_lost" if kind == "gpu_lost" else f"xid{xid}",
                fault_class=cls,
                component_type="gpu",
                component=where,
                node=node,
                first_seen=first,
                last_seen=last,
                confidence=1.0 if len(sources) > 1 or kind == "gpu_lost" else 0.95,
                action=ACTION_BY_XID_ACTION.get(action, action),
                summary=f"{label} on {where}: {g['meaning'][0]}",
                evidence={"xid": xid, "events": g.height, "sources": sources, "pci_bus_id": bus},
                evidence_sql=f"SELECT * FROM gpu_events WHERE node = '{node}' AND pci_bus_id = '{bus}' ORDER BY ts",
            )
        )
    return out


def nic_rate_findings(ports: pl.DataFrame) -> list[Finding]:
    """Ports whose negotiated rate fell below the rate the same port (or its node's other ports) ran at."""
    out = []
    if ports.is_empty():
        return out
    nominal = ports.group_by("node").agg(pl.col("rate_bps").max().alias("node_max"))
    latest = (
        ports.sort("ts")
        .group_by(["node", "device", "port"], maintain_order=True)
        .agg(
            pl.col("rate_bps").last().alias("rate"),
            pl.col("rate_bps").max().alias("port_max"),
            pl.col("state").last().alias("state"),
            pl.col("ts").last().alias("last"),
            pl.col("ts").filter(pl.col("rate_bps") < pl.col("rate_bps").max()).min().alias("first"),
        )
        .join(nominal, on="node")
    )
    for r in latest.iter_rows(named=True):
        ref = max(r["port_max"] or 0, r["node_max"] or 0)
        if r["rate"] is None or not ref or r["rate"] >= ref or r["state"] != "ACTIVE":
            continue
        comp = f"{r['node']}/{r['device']}p{r['port']}"
        out.append(
            Finding(
                "nic_rate",
                "hardware",
                "nic_port",
                comp,
                r["node"],
                r["first"],
                r["last"],
                0.9,
                "replace_cable",
                f"{comp} runs at {r['rate'] / 1e9:g} Gb/s, below its nominal {ref / 1e9:g}",
                {"rate_bps": r["rate"], "nominal_bps": ref},
                f"SELECT ts, rate_bps, state FROM ib_port_samples WHERE node = '{r['node']}' AND "
                f"device = '{r['device']}' ORDER BY ts",
            )
        )
    return out


def nic_link_findings(ports: pl.DataFrame, flaps: int = 2) -> list[Finding]:
    """Ports down now, or whose link_downed counter rose `flaps` times or more in the window (flapping)."""
    out = []
    if ports.is_empty():
        return out
    agg = (
        ports.sort("ts")
        .group_by(["node", "device", "port"], maintain_order=True)
        .agg(
            (pl.col("link_downed").max() - pl.col("link_downed").min()).alias("downs"),
            pl.col("state").last().alias("state"),
            pl.col("ts").first().alias("first"),
            pl.col("ts").last().alias("last"),
        )
    )
    for r in agg.iter_rows(named=True):
        comp = f"{r['node']}/{r['device']}p{r['port']}"
        downs = r["downs"] or 0
        if downs >= flaps:  # a flapping link may happen to be down right now: it is still flapping
            out.append(
                Finding(
                    "nic_flap",
                    "hardware",
                    "nic_port",
                    comp,
                    r["node"],
                    r["first"],
                    r["last"],
                    0.9,
                    "replace_cable",
                    f"{comp} went down {downs} times in the window (flapping)",
                    {"link_downed_increase": downs, "state": r["state"]},
                )
            )
        elif r["state"] not in (None, "ACTIVE"):
            out.append(
                Finding(
                    "nic_down",
                    "hardware",
                    "nic_port",
                    comp,
                    r["node"],
                    r["first"],
                    r["last"],
                    0.95,
                    "replace_cable",
                    f"{comp} is {r['state']}",
                    {"state": r["state"], "downs": downs},
                )
            )
    return out


def nic_retrans_findings(ports: pl.DataFrame, min_increase: int = 20) -> list[Finding]:
    """Ports retransmitting far above their peers (robust: median and MAD of every port's increase)."""
    out = []
    if ports.is_empty() or "roce_adp_retrans" not in ports.columns:
        return out
    inc = (
        ports.sort("ts")
        .group_by(["node", "device", "port"], maintain_order=True)
        .agg(
            (pl.col("roce_adp_retrans").max() - pl.col("roce_adp_retrans").min()).alias("inc"),
            pl.col("ts").first().alias("first"),
            pl.col("ts").last().alias("last"),
        )
        .with_columns(pl.col("inc").fill_null(0))
    )
    med = inc["inc"].median() or 0
    mad = (inc["inc"] - med).abs().median() or 0
    for r in inc.iter_rows(named=True):
        if r["inc"] >= max(min_increase, med + 6 * (mad or 1)):
            comp = f"{r['node']}/{r['device']}p{r['port']}"
            out.append(
                Finding(
                    "nic_retrans",
                    "hardware",
                    "nic_port",
                    comp,
                    r["node"],
                    r["first"],
                    r["last"],
                    0.8,
                    "replace_cable",
                    f"{comp} retransmitted {r['inc']} times (ports' median {med})",
                    {"retrans_increase": r["inc"], "median": med, "mad": mad},
                )
            )
    return out


def gpu_state_findings(gpus: pl.DataFrame) -> list[Finding]:
    """Thermal throttling, PCIe downtraining and failed row remapping from the latest GPU samples."""
    out = []
    if gpus.is_empty():
        return out
    latest = gpus.sort("ts").group_by(["node", "gpu_index"], maintain_order=True).last()
    for r in latest.iter_rows(named=True):
        comp = f"{r['node']}/gpu{r['gpu_index']}"
        ts = r["ts"]
        if (r.get("clocks_event_reasons") or 0) & THERMAL_BITS:
            out.append(
                Finding(
                    "gpu_throttle",
                    "non_comm_slow",
                    "gpu",
                    comp,
                    r["node"],
                    ts,
                    ts,
                    0.8,
                    "drain_node",
                    f"{comp} is thermally throttled ({r.get('temp_gpu_c')} C, SM {r.get('clock_sm_mhz')} MHz)",
                    {
                        "clocks_event_reasons": r.get("clocks_event_reasons"),
                        "temp_gpu_c": r.get("temp_gpu_c"),
                    },
                )
            )
        cur, top = r.get("pcie_gen_cur"), r.get("pcie_gen_max")
        if cur is not None and top is not None and cur < top:
            out.append(
                Finding(
                    "pcie_downtrain",
                    "hardware",
                    "gpu",
                    comp,
                    r["node"],
                    ts,
                    ts,
                    0.85,
                    "reset_gpu",
                    f"{comp} PCIe link trained at gen {cur}, can do gen {top}",
                    {"pcie_gen_cur": cur, "pcie_gen_max": top},
                )
            )
        if r.get("remapped_rows_failure"):
            out.append(
                Finding(
                    "row_remap_failure",
                    "hardware",
                    "gpu",
                    comp,
                    r["node"],
                    ts,
                    ts,
                    1.0,
                    "replace_gpu",
                    f"{comp} has no spare rows left: remapping failed",
                    {"remapped_rows_failure": 1},
                )
            )
    return out


def congestion_findings(ports: pl.DataFrame, min_cnp: int = 1000) -> list[Finding]:
    """Ports receiving CNPs/ECN marks without errors: congestion, not hardware (recorded as such)."""
    out = []
    if ports.is_empty() or "np_cnp_sent" not in ports.columns:
        return out
    inc = (
        ports.sort("ts")
        .group_by("node", maintain_order=True)
        .agg(
            (pl.col("np_cnp_sent").max() - pl.col("np_cnp_sent").min()).alias("cnp"),
            (pl.col("roce_adp_retrans").max() - pl.col("roce_adp_retrans").min()).alias("retrans"),
            pl.col("ts").first().alias("first"),
            pl.col("ts").last().alias("last"),
        )
    )
    for r in inc.iter_rows(named=True):
        if (r["cnp"] or 0) >= min_cnp and not (r["retrans"] or 0):
            out.append(
                Finding(
                    "congestion",
                    "congestion",
                    "node",
                    r["node"],
                    r["node"],
                    r["first"],
                    r["last"],
                    0.7,
                    "replan_traffic",
                    f"{r['node']} NICs see {r['cnp']} CNPs and no retransmits: congestion",
                    {"cnp_increase": r["cnp"]},
                )
            )
    return out


def hardware_findings(tables: dict[str, pl.DataFrame]) -> list[Finding]:
    """Every hardware detector over one window of data."""
    empty = pl.DataFrame()
    ports = tables.get("ib_port_samples", empty)
    return (
        xid_findings(tables.get("gpu_events", empty))
        + nic_rate_findings(ports)
        + nic_link_findings(ports)
        + nic_retrans_findings(ports)
        + gpu_state_findings(tables.get("gpu_samples", empty))
        + congestion_findings(ports)
    )
