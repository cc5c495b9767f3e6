"""When to replan a job (C4P's closed loop): fabric links C4D or discovery found down or degraded, the
jobs whose newest plan routes pieces over them, and which of those were replanned already.

Pure functions over polars frames of the stored tables (faults, fabric_contradictions, plans,
plan_runs) and the fabric YAML's Topology; the collector reads the frames and acts on the answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from c4.traffic.replanning import port_index
from c4.traffic.topology import Topology

#: plan_runs reasons of a replan off a link (the links a job's plan avoids until they come back).
LINK_REASONS = ("link_down", "link_degraded", "link_vanished")
#: plan_runs reason of a replan back onto a link no finding holds any more.
RESTORED = "link_restored"
#: plan_runs reasons of a plan made by hand (or the first): a replan chain starts after the newest.
FRESH_REASONS = ("initial", "manual")

#: The twin's RDMA devices: mlx5_<n> is NIC n of its host (one port each).
_MLX5 = re.compile(r"^mlx5_(\d+)$")

#: (node, RDMA device) -> its network interface, as the nic sampler found it (ib_port_samples.netdev).
Netdevs = dict[tuple[str, str], str]


@dataclass(frozen=True)
class LinkTrigger:
    """A fabric cable found down or degraded: why, by which finding, and at what rate."""

    reason: str  # link_down | link_degraded | link_vanished | link_restored
    fault_id: str  # the C4D fault ('' for a discovery finding)
    a: str  # the cable's ends in the fabric YAML's names (a host port or a leaf first)
    b: str
    since: datetime | None  # when the finding was made (a discovery pass's ts; a fault's first_seen)
    throughput_ratio: float | None = None  # C4D's slow connections over their peers (switch cables)
    rate_gbps: float | None = None  # a measured rate (a host port's)
    episode_since: datetime | None = None  # the fault last resolved then (None: never): it opened again

    @property
    def link(self) -> str:
        """The cable as plan_runs names it: 'a->b' (uplink direction)."""
        return f"{self.a}->{self.b}"


@dataclass
class Unmapped:
    """Findings about links the fabric YAML does not have, counted by reason."""

    counts: dict[str, int]

    def add(self, reason: str) -> None:
        """Count one."""
        self.counts[reason] = self.counts.get(reason, 0) + 1


def _uplink(topo: Topology, x: str, y: str) -> tuple[str, str] | None:
    """The cable x<->y as (lower end, upper end) if the fabric has it, else None."""
    tier = {**dict.fromkeys(topo.cores, 3), **dict.fromkeys(topo.spines, 2), **dict.fromkeys(topo.leaves, 1)}
    a, b = sorted((x, y), key=lambda n: tier.get(n, 0))
    return (a, b) if topo.has_link(a, b) else None


def _port_of(topo: Topology, component: str, netdevs: Netdevs) -> str | None:
    """The fabric YAML's NIC port a NIC port fault names ('host3/mlx5_2p1', its RDMA device and port):
    the port whose ifname is the device's network interface (or the device itself), else NIC n for
    mlx5_<n> on a host with one port per NIC (the twin's naming); None when none fits."""
    host, _, dev_port = component.partition("/")
    device = dev_port.rsplit("p", 1)[0]
    h = topo.hosts.get(host)
    if h is None:
        return None
    names = {n for n in (netdevs.get((host, device)), device) if n}
    for nic in h.nics:
        for p in nic:
            if p.ifname and p.ifname in names:
                return p.name
    m = _MLX5.match(device)
    if m and int(m.group(1)) < len(h.nics) and len(h.nics[int(m.group(1))]) == 1:
        return h.nics[int(m.group(1))][0].name
    return None


def fault_triggers(
    faults: pl.DataFrame, topo: Topology, unmapped: Unmapped, netdevs: Netdevs | None = None
) -> list[LinkTrigger]:
    """Open or acknowledged faults (latest row per fault_id) on fabric links: a switch cable C4D found
    slow (link_degraded), a host port down (nic_down: link_down) or below its rate (nic_rate); a port
    is found by its network interface (``netdevs``) as the YAML's ifname."""
    out: list[LinkTrigger] = []
    if faults.is_empty():
        return out
    live = faults.filter(pl.col("state").is_in(["open", "acknowledged"]))
    for r in live.iter_rows(named=True):
        comp, detector = r["component"] or "", r["detector"] or ""
        evidence = _evidence(r.get("evidence_json"))
        if r["component_type"] == "switch_link" and "<->" in comp:
            ends = _uplink(topo, *comp.split("<->", 1))
            if ends is None:
                unmapped.add("switch_link_not_in_fabric")
                continue
            ratio = evidence.get("throughput_ratio")
            if not isinstance(ratio, int | float) or not 0 < ratio < 1:
                unmapped.add("switch_link_without_ratio")  # no rate to plan it at
                continue
            out.append(
                LinkTrigger(
                    "link_degraded", r["fault_id"], *ends, r["first_seen"], throughput_ratio=float(ratio)
                )
            )
        elif detector in ("nic_down", "nic_rate") and "/" in comp:
            port = _port_of(topo, comp, netdevs or {})
            if port is None:
                unmapped.add("nic_port_not_in_fabric")
                continue
            leaf = topo.port(*port_index(port)).leaf
            episode = r.get("resolved_before")
            if detector == "nic_down":
                out.append(
                    LinkTrigger(
                        "link_down", r["fault_id"], port, leaf, r["first_seen"], episode_since=episode
                    )
                )
            else:
                rate = evidence.get("rate_bps")
                if not isinstance(rate, int | float) or rate <= 0:
                    unmapped.add("nic_rate_without_rate")
                    continue
                out.append(
                    LinkTrigger(
                        "link_degraded",
                        r["fault_id"],
                        port,
                        leaf,
                        r["first_seen"],
                        rate_gbps=rate / 1e9,
                        episode_since=episode,
                    )
                )
    return out


def _evidence(text: str | None) -> dict:
    """A fault's evidence_json as a dict ({} when absent or not an object)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def vanished_triggers(
    contradictions: pl.DataFrame, current: set[frozenset[str]], topo: Topology, unmapped: Unmapped
) -> list[LinkTrigger]:
    """Cables discovery saw vanish and has not seen again (``current``: the systems at both ends of each
    cable of the newest pass), as link_vanished triggers on the fabric YAML's cables."""
    out: list[LinkTrigger] = []
    if contradictions.is_empty():
        return out
    gone = contradictions.filter(pl.col("kind") == "vanished").sort("ts")
    for r in gone.iter_rows(named=True):
        other, _, other_port = (r["expected"] or "").partition("/")
        if frozenset((r["system"], other)) in current:
            continue  # seen again since
        x = r["system"]
        if x in topo.hosts:  # a host's interface: its NIC port by ifname
            x = next((p.name for p in topo.ports() if p.host == x and p.ifname == r["port"]), "")
        elif other in topo.hosts:
            other = next((p.name for p in topo.ports() if p.host == other and p.ifname == other_port), "")
        ends = _uplink(topo, x, other) if x and other else None
        if ends is None:
            unmapped.add("vanished_cable_not_in_fabric")
            continue
        out.append(LinkTrigger("link_vanished", "", *ends, r["ts"]))
    return out


def newest_plans(plans: pl.DataFrame) -> pl.DataFrame:
    """Per job, the rows of its newest plan (by ts)."""
    if plans.is_empty():
        return plans
    newest = plans.group_by("job").agg(pl.col("plan_id").sort_by("ts").last())
    return plans.join(newest, on=["job", "plan_id"], how="semi")


def crosses(rows: pl.DataFrame, a: str, b: str) -> bool:
    """Whether any piece of a plan's rows uses the cable a<->b (a NIC port's cable, or two adjacent switches)."""
    if "/" in a:  # a host port's cable
        return bool(rows.filter((pl.col("src_port") == a) | (pl.col("dst_port") == a)).height)
    pattern = rf"(^|>)({re.escape(a)}>{re.escape(b)}|{re.escape(b)}>{re.escape(a)})(>|$)"
    return bool(rows.filter(pl.col("path").str.contains(pattern)).height)


def already_replanned(runs: pl.DataFrame, job: str, t: LinkTrigger) -> bool:
    """Whether plan_runs holds this job's replan for this trigger: the same fault and link (since the
    fault last resolved, if it opened again), or (a discovery finding, which has no fault) a replan
    for the link made since the finding."""
    if runs.is_empty():
        return False
    mine = runs.filter((pl.col("job") == job) & (pl.col("link") == t.link) & (pl.col("reason") == t.reason))
    if t.fault_id:
        mine = mine.filter(pl.col("fault_id") == t.fault_id)
        if t.episode_since is not None:
            mine = mine.filter(pl.col("ts") > t.episode_since)
        return bool(mine.height)
    return bool(mine.filter(pl.col("ts") >= t.since).height) if t.since is not None else bool(mine.height)


def jobs_to_replan(
    triggers: list[LinkTrigger], plans: pl.DataFrame, runs: pl.DataFrame
) -> list[tuple[str, str, LinkTrigger]]:
    """(job, its newest plan_id, the trigger) for each job whose newest plan routes pieces over a
    triggering link and that was not replanned for it yet; a job hit by several gets its first."""
    out: list[tuple[str, str, LinkTrigger]] = []
    newest = newest_plans(plans)
    if newest.is_empty():
        return out
    for (job, plan_id), rows in sorted(newest.group_by(["job", "plan_id"]), key=lambda g: g[0]):
        for t in triggers:
            if crosses(rows, t.a, t.b) and not already_replanned(runs, job, t):
                out.append((job, plan_id, t))
                break
    return out


def jobs_to_restore(
    triggers: list[LinkTrigger], plans: pl.DataFrame, runs: pl.DataFrame
) -> list[tuple[str, str, LinkTrigger]]:
    """(job, its newest plan_id, a link_restored trigger) for each job replanned off a link that no
    finding holds now (a host port's fault resolved, the vanished cable seen again) and not replanned
    back since; only replans made after the job's newest initial or manual plan count (an operator's
    plan stands).

    A switch cable C4D found slow is not among them: that finding is inferred from the traffic crossing
    the cable, so once a replan moves the traffic off, the fault resolves with no evidence that the
    cable is mended (an operator replans the job with `c4 plan --collector` once it is). A host port
    (its state and rate read on the node) and a vanished cable (seen by discovery) are observed
    directly. A job with several mended links gets the first (the replan is made on the whole fabric
    as it is now)."""
    out: list[tuple[str, str, LinkTrigger]] = []
    newest = newest_plans(plans)
    if newest.is_empty() or runs.is_empty():
        return out
    live = {t.link for t in triggers}
    for job, plan_id in sorted(set(newest.select("job", "plan_id").iter_rows())):
        mine = runs.filter(pl.col("job") == job).sort("ts")
        fresh = mine.filter(pl.col("reason").is_in(FRESH_REASONS))
        if fresh.height:
            mine = mine.filter(pl.col("ts") > fresh["ts"][-1])
        restored_at: dict[str, datetime] = {}
        for r in mine.filter(pl.col("reason") == RESTORED).iter_rows(named=True):
            restored_at[r["link"]] = r["ts"]
        for r in mine.filter(pl.col("reason").is_in(LINK_REASONS)).iter_rows(named=True):
            link = r["link"] or ""
            back = restored_at.get(link)
            if link in live or "->" not in link or (back is not None and back > r["ts"]):
                continue
            a, _, b = link.partition("->")
            if r["reason"] == "link_degraded" and "/" not in a:  # a switch cable C4D inferred slow
                continue
            out.append((job, plan_id, LinkTrigger(RESTORED, r["fault_id"] or "", a, b, r["ts"])))
            break
    return out
