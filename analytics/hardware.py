"""Hardware detectors: pure functions from polars frames of collected tables to findings."""

from __future__ import annotations

import polars as pl

from c4.analytics.findings import Finding
from c4.analytics.onset import rise_onsets, trailing_onsets

THERMAL_BITS = 0x20 | 0x40 | 0x08  # SW thermal, HW thermal, HW slowdown
ACTION_BY_XID_ACTION = {"check_link": "replace_cable"}


def _ts_range(df: pl.DataFrame) -> tuple:
    return df["ts"].min(), df["ts"].max()


def _bus_key(bus: str | None) -> str:
    """A PCI bus id comparable across NVML (00000000:18:00.0) and the kernel log (0000:18:00)."""
    if not bus:
        return ""
    parts = bus.lower().split(":")
    if len(parts) < 3:
        return bus.lower()
    return f"{int(parts[-3], 16):x}:{parts[-2]}:{parts[-1].split('.')[0]}"


def xid_findings(gpu_events: pl.DataFrame, gpus: pl.DataFrame | None = None) -> list[Finding]:
    """Every Xid and lost GPU, by catalogue category and action (application Xids are not hardware).

    A kernel-log Xid names a PCI bus id only (a GPU that fell off the bus has no NVML index any more):
    the GPU index comes from the same node's earlier NVML samples of that bus id.
    """
    out = []
    if gpu_events.is_empty():
        return out
    index_of: dict[tuple[str, str], int] = {}
    if gpus is not None and not gpus.is_empty() and "pci_bus_id" in gpus.columns:
        for node, bus, idx in gpus.select(["node", "pci_bus_id", "gpu_index"]).unique().iter_rows():
            index_of[(node, _bus_key(bus))] = idx
    for (node, bus, kind, xid), g in gpu_events.group_by(
        ["node", "pci_bus_id", "kind", "xid"], maintain_order=True
    ):
        first, last = _ts_range(g)
        gpu = g["gpu_index"].drop_nulls()
        idx = gpu[0] if len(gpu) else index_of.get((node, _bus_key(bus)))
        where = f"{node}/gpu{idx}" if idx is not None else f"{node}/pci{bus}"
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
    keys = ["node", "device", "port"]
    first_down = rise_onsets(ports, keys, ["link_downed"], 0)  # the first carrier loss in the window
    down_since = trailing_onsets(ports, keys, pl.col("state") != "ACTIVE")
    for r in agg.iter_rows(named=True):
        comp = f"{r['node']}/{r['device']}p{r['port']}"
        downs = r["downs"] or 0
        key = (r["node"], r["device"], r["port"])
        if downs >= flaps:  # a flapping link may happen to be down right now: it is still flapping
            out.append(
                Finding(
                    "nic_flap",
                    "hardware",
                    "nic_port",
                    comp,
                    r["node"],
                    first_down.get(key, r["first"]),
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
                    down_since.get(key, r["first"]),
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
    baseline = med + 6 * (mad or 1)  # the most a healthy port retransmits in the window
    onsets = None
    for r in inc.iter_rows(named=True):
        if r["inc"] >= max(min_increase, baseline):
            if onsets is None:  # the first sample by which the port retransmitted more than that
                onsets = rise_onsets(ports, ["node", "device", "port"], ["roce_adp_retrans"], baseline)
            comp = f"{r['node']}/{r['device']}p{r['port']}"
            out.append(
                Finding(
                    "nic_retrans",
                    "hardware",
                    "nic_port",
                    comp,
                    r["node"],
                    onsets.get((r["node"], r["device"], r["port"]), r["first"]),
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
    keys = ["node", "gpu_index"]
    latest = gpus.sort("ts").group_by(keys, maintain_order=True).last()
    cols = set(gpus.columns)
    since = {  # per condition, when its trailing run began on each GPU
        "throttle": trailing_onsets(
            gpus, keys, (pl.col("clocks_event_reasons").fill_null(0) & THERMAL_BITS) != 0
        )
        if "clocks_event_reasons" in cols
        else {},
        "pcie": trailing_onsets(gpus, keys, pl.col("pcie_gen_cur") < pl.col("pcie_gen_max"))
        if {"pcie_gen_cur", "pcie_gen_max"} <= cols
        else {},
        "remap": trailing_onsets(gpus, keys, pl.col("remapped_rows_failure").cast(pl.Boolean))
        if "remapped_rows_failure" in cols
        else {},
    }
    for r in latest.iter_rows(named=True):
        comp = f"{r['node']}/gpu{r['gpu_index']}"
        ts = r["ts"]
        key = (r["node"], r["gpu_index"])
        if (r.get("clocks_event_reasons") or 0) & THERMAL_BITS:
            out.append(
                Finding(
                    "gpu_throttle",
                    "non_comm_slow",
                    "gpu",
                    comp,
                    r["node"],
                    since["throttle"].get(key, ts),
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
                    since["pcie"].get(key, ts),
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
                    since["remap"].get(key, ts),
                    ts,
                    1.0,
                    "replace_gpu",
                    f"{comp} has no spare rows left: remapping failed",
                    {"remapped_rows_failure": 1},
                )
            )
    return out


def congestion_findings(ports: pl.DataFrame, min_cnp: int = 1000) -> list[Finding]:
    """NICs receiving CNPs/ECN marks without errors: congestion, not hardware; one fabric-level finding."""
    if ports.is_empty() or "np_cnp_sent" not in ports.columns:
        return []
    inc = (
        ports.sort("ts")
        .group_by("node", maintain_order=True)
        .agg(
            (pl.col("np_cnp_sent").max() - pl.col("np_cnp_sent").min()).alias("cnp"),
            (pl.col("roce_adp_retrans").max() - pl.col("roce_adp_retrans").min()).alias("retrans"),
            pl.col("ts").first().alias("first"),
            pl.col("ts").last().alias("last"),
        )
        .filter((pl.col("cnp").fill_null(0) >= min_cnp) & (pl.col("retrans").fill_null(0) == 0))
        .sort("node")
    )
    if inc.is_empty():
        return []
    nodes = inc["node"].to_list()
    congested = ports.filter(pl.col("node").is_in(nodes))
    onsets = rise_onsets(congested, ["node"], ["np_cnp_sent"], 0, per=["node", "device", "port"])
    onset = min(onsets.values(), default=None) or inc["first"].min()  # the first CNPs on a congested node
    return [
        Finding(
            "congestion",
            "congestion",
            "fabric",
            "fabric",
            nodes[0],
            onset,
            inc["last"].max(),
            0.7,
            "replan_traffic",
            f"{len(nodes)} nodes' NICs see CNPs and no retransmits: congestion in the fabric, not a fault",
            {"nodes": nodes, "cnp_increase": int(inc["cnp"].sum())},
            "SELECT ts, node, device, np_cnp_sent, roce_adp_retrans FROM ib_port_samples ORDER BY ts",
        )
    ]


#: Error counters watched for bursts: table, the component's key columns, counters summed, the floor an
#: increase must reach, whether peers set the baseline (median + 6 MAD), and what it means.
COUNTER_RULES: tuple[dict, ...] = (
    {
        "detector": "nvlink_errors",
        "table": "nvlink_samples",
        "keys": ("node", "gpu_index"),
        "counters": (
            "crc_data_errors",
            "link_crc_errors",
            "replay_errors",
            "recovery_errors",
            "rx_error_packets",
            "link_recovery_failed_events",
        ),
        "min_increase": 10,
        "peer_baseline": True,
        "component_type": "gpu",
        "action": "reset_gpu",
        "what": "NVLink CRC/replay/recovery errors",
    },
    {
        "detector": "pcie_replay_burst",
        "table": "gpu_samples",
        "keys": ("node", "gpu_index"),
        "counters": ("pcie_replay_count",),
        "min_increase": 100,
        "peer_baseline": True,
        "component_type": "gpu",
        "action": "reset_gpu",
        "what": "PCIe replays",
    },
    {
        "detector": "ecc_uncorrectable",
        "table": "gpu_samples",
        "keys": ("node", "gpu_index"),
        "counters": ("ecc_dbe_volatile",),
        "min_increase": 1,
        "peer_baseline": False,
        "component_type": "gpu",
        "action": "reset_gpu",
        "what": "uncorrectable (double-bit) ECC errors",
    },
    {
        "detector": "nic_symbol_errors",
        "table": "ib_port_samples",
        "keys": ("node", "device", "port"),
        "counters": ("symbol_errors", "link_error_recovery"),
        "min_increase": 50,
        "peer_baseline": True,
        "component_type": "nic_port",
        "action": "replace_cable",
        "what": "symbol errors and link error recoveries",
    },
)


def counter_burst_findings(
    tables: dict[str, pl.DataFrame], rules: tuple[dict, ...] = COUNTER_RULES
) -> list[Finding]:
    """Error counters that rose in the window above a floor and (where peers set the baseline) far above peers."""
    out = []
    for rule in rules:
        df = tables.get(rule["table"])
        counters = [c for c in rule["counters"] if df is not None and c in df.columns]
        if df is None or df.is_empty() or not counters:
            continue
        keys = list(rule["keys"])
        per_link = [*keys, "link"] if "link" in df.columns else keys  # counters are per link: diff each first
        inc = (
            df.sort("ts")
            .group_by(per_link)
            .agg(
                sum((pl.col(c).max() - pl.col(c).min()).fill_null(0) for c in counters).alias("inc"),
                pl.col("ts").first().alias("first"),
                pl.col("ts").last().alias("last"),
            )
            .group_by(keys)
            .agg(pl.col("inc").sum(), pl.col("first").min(), pl.col("last").max())
        )
        med = float(inc["inc"].median() or 0)
        mad = float((inc["inc"] - med).abs().median() or 0)
        floor = (
            max(rule["min_increase"], med + 6 * max(mad, 1))
            if rule["peer_baseline"]
            else rule["min_increase"]
        )
        burst = inc.filter(pl.col("inc") >= floor)
        # when the signal appeared: the first sample by which the component rose more than a healthy peer
        # does in the whole window (any rise where peers set no baseline)
        baseline = med + 6 * max(mad, 1) if rule["peer_baseline"] else 0
        onsets = rise_onsets(df, keys, counters, baseline, per_link) if burst.height else {}
        for r in burst.iter_rows(named=True):
            if rule["component_type"] == "gpu":
                comp = f"{r['node']}/gpu{r['gpu_index']}"
            else:
                comp = f"{r['node']}/{r['device']}p{r['port']}"
            where = " AND ".join(f"{k} = '{r[k]}'" for k in keys)
            out.append(
                Finding(
                    rule["detector"],
                    "hardware",
                    rule["component_type"],
                    comp,
                    r["node"],
                    onsets.get(tuple(r[k] for k in keys), r["first"]),
                    r["last"],
                    0.85,
                    rule["action"],
                    f"{comp}: {int(r['inc'])} {rule['what']} in the window (peers' median {med:g})",
                    {"increase": int(r["inc"]), "peer_median": med, "peer_mad": mad, "counters": counters},
                    f"SELECT ts, {', '.join(counters)} FROM {rule['table']} WHERE {where} ORDER BY ts",
                )
            )
    return out


def hardware_findings(tables: dict[str, pl.DataFrame]) -> list[Finding]:
    """Every hardware detector over one window of data."""
    empty = pl.DataFrame()
    ports = tables.get("ib_port_samples", empty)
    return (
        xid_findings(tables.get("gpu_events", empty), tables.get("gpu_samples"))
        + nic_rate_findings(ports)
        + nic_link_findings(ports)
        + nic_retrans_findings(ports)
        + gpu_state_findings(tables.get("gpu_samples", empty))
        + congestion_findings(ports)
        + counter_burst_findings(tables)
    )
