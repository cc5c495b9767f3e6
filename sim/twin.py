"""Digital twin of a training cluster: a job's iterations on the fabric model, with injected faults.

Pure simulation (no files): every step of simulated time yields what each node's hardware and
NCCL would show; `agent/twin_node.py` writes it where the real samplers read. Per-connection
throughput comes from the max-min fluid model of the current routing (ECMP or a C4P plan) and
link states, so congestion and degraded links slow collectives the way they would on a fabric.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from c4.traffic.collectives import Flow, Job, job_flows
from c4.traffic.fluid import FluidSim
from c4.traffic.generators import leaf_spine
from c4.traffic.planner import Planner
from c4.traffic.routing import capacities, ecmp_subflows
from c4.traffic.topology import Topology

FAULT_KINDS = {
    # kind: (expected class, component type, recommended action)
    "nic_degraded": ("hardware", "nic_port", "replace_cable"),
    "link_flap": ("hardware", "nic_port", "replace_cable"),
    "link_down": ("hardware", "nic_port", "replace_cable"),
    "spine_link_degraded": ("hardware", "switch_link", "replace_cable"),
    "ecmp_congestion": ("congestion", "switch_link", "replan_traffic"),
    "xid": ("hardware", "gpu", "by_xid"),
    "row_remap_failure": ("hardware", "gpu", "replace_gpu"),
    "thermal_throttle": ("non_comm_slow", "gpu", "drain_node"),
    "rank_hang": ("non_comm_hang", "gpu", "restart_job"),
    "comm_hang": ("comm_hang", "nic_port", "restart_job"),
    "pcie_downtrain": ("hardware", "gpu", "reset_gpu"),
    # negatives: must raise nothing
    "transient_slowdown": ("none", "none", "none"),
    "uniform_slowdown": ("none", "none", "none"),
    "job_restart": ("none", "none", "none"),
}


@dataclass
class Fault:
    """One injected fault with its ground truth."""

    kind: str
    at_s: float
    duration_s: float = float("inf")
    node: str = ""
    gpu: int = 0
    nic: int = 0
    xid: int = 0
    factor: float = 0.5  # slowdown / rate factor

    def active(self, t: float) -> bool:
        """Whether the fault is in effect at simulated time t."""
        return self.at_s <= t < self.at_s + self.duration_s

    def truth(self) -> dict[str, Any]:
        """The ground-truth row of this fault."""
        cls, comp, action = FAULT_KINDS[self.kind]
        if self.kind == "xid":
            from c4.agent.xid import describe

            action = describe(self.xid).action
        component = {
            "gpu": f"{self.node}/gpu{self.gpu}",
            "nic_port": f"{self.node}/nic{self.nic}",
            "switch_link": f"{self.node}",
            "none": "",
        }.get(comp, self.node)
        return {
            "fault": self.kind,
            "component_type": comp,
            "component": component,
            "onset_s": self.at_s,
            "end_s": None if self.duration_s == float("inf") else self.at_s + self.duration_s,
            "expected_class": cls,
            "expected_action": action,
            "xid": self.xid or None,
        }


def load_scenario(path: Path | str) -> dict[str, Any]:
    """A scenario YAML: cluster size, job, routing and the faults to inject."""
    import yaml

    spec = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a mapping")
    faults = []
    for i, f in enumerate(spec.get("faults") or []):
        if f.get("kind") not in FAULT_KINDS:
            raise ValueError(
                f"{path}: fault #{i} has unknown kind {f.get('kind')!r}; known: {sorted(FAULT_KINDS)}"
            )
        faults.append(Fault(**{k: v for k, v in f.items() if k in Fault.__dataclass_fields__}))
    spec["faults"] = faults
    return spec


@dataclass
class RankStep:
    """What one rank did in one iteration."""

    rank: int
    node: str
    gpu: int
    issued: bool
    arrive_s: float  # when the rank entered the collective (sim time)
    exec_us: float


@dataclass
class StepOutput:
    """One iteration: per-rank collective records, per-connection timing, per-node hardware deltas."""

    t: float
    seq: int
    ranks: list[RankStep]
    conns: list[dict[str, Any]]
    nic_bytes: dict[tuple[str, int], float]  # (node, nic) -> bytes sent this step
    gpu_state: dict[tuple[str, int], dict[str, Any]]
    events: list[dict[str, Any]]  # Xid lines etc.
    link_events: list[dict[str, Any]]
    duration_s: float
    blocked: bool = False  # the collective did not complete (a hang): no rank finishes it
    congested_nics: set = field(default_factory=set)  # (node, nic) whose flows met ECN-marking congestion
    nvlink_errors: dict = field(default_factory=dict)  # (node, gpu) -> NVLink errors added this step
    restarted: bool = False  # the job restarted: collective sequence numbers begin again


@dataclass
class ClusterTwin:
    """N nodes x G GPUs x R NICs on a leaf/spine fabric running one data-parallel job."""

    nodes: int = 16
    gpus: int = 8
    nics: int = 8
    leaves: int = 4
    spines: int = 4
    compute_s: float = 1.0
    jitter: float = 0.02
    message_bytes: float = 16 << 30  # gradients of a ~8B-parameter model in bf16
    routing: str = "ecmp"  # ecmp | plan
    qps: int = 1
    seed: int = 0
    pp: int = 1  # pipeline stages: stage s runs on nodes [s*dp, (s+1)*dp), dp = nodes / pp
    activation_bytes: float = 512 << 20  # p2p bytes between adjacent stages per iteration (each way)
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # ECMP congestion needs a second job: its nodes share the fabric (and are not monitored here)
        self.topo: Topology = leaf_spine(
            self.nodes,
            min(self.leaves, self.nodes),
            self.spines,
            nics_per_host=self.nics,
            gpus_per_host=self.gpus,
        )
        self.hosts = list(self.topo.hosts)
        self.bg_hosts: list[str] = []
        if any(f.kind == "ecmp_congestion" for f in self.faults):
            for i in range(max(2, len(self.topo.leaves))):  # one per leaf, so its ring crosses the spines
                self.bg_hosts.append(self._add_host(f"other{i}", self.topo.leaves[i % len(self.topo.leaves)]))
        if self.pp < 1 or self.nodes % self.pp:
            raise ValueError(f"pp={self.pp} must divide nodes={self.nodes}")
        self.dp = self.nodes // self.pp
        self.stages = [self.hosts[s * self.dp : (s + 1) * self.dp] for s in range(self.pp)]
        self.stage_of = {h: s for s, hosts in enumerate(self.stages) for h in hosts}
        # data parallel: a ring all-reduce within each stage (TP rides NVLink inside a node)
        self.stage_jobs = [
            Job(
                f"dp{s}",
                hosts,
                channels=self.nics,
                qps=self.qps,
                message_bytes=self.message_bytes / self.pp,
                shuffle_seed=self.seed + s,
                gpus_per_host=self.gpus,
            )
            for s, hosts in enumerate(self.stages)
        ]
        self.job = self.stage_jobs[0] if self.pp == 1 else Job("train", self.hosts, gpus_per_host=self.gpus)
        self.flows: list[Flow] = [f for j in self.stage_jobs for f in job_flows(j, self.topo)]
        self.dp_flows = len(self.flows)
        # pipeline parallel: activations forward and gradients backward between the same slot of adjacent stages
        for s in range(self.pp - 1):
            for k in range(self.dp):
                a, b = self.stages[s][k], self.stages[s + 1][k]
                for n in range(self.nics):
                    per = self.activation_bytes / self.nics
                    self.flows.append(Flow("pp", a, b, n, n, n, per, self.qps))
                    self.flows.append(Flow("pp", b, a, n, n, n, per, self.qps))
        self.t = 0.0
        self.seq = 0
        self.hung_at_seq: int | None = None
        self._sub: list | None = None

    def _add_host(self, name: str, leaf: str) -> str:
        """A host of another job, cabled to ``leaf`` like ours."""
        from c4.traffic.topology import Host, NicPort

        i = len(self.topo.hosts)
        nics = [[NicPort(name, n, 0, leaf, f"10.200.{i & 255}.{n + 1}", rail=n)] for n in range(self.nics)]
        self.topo.hosts[name] = Host(name, self.gpus, nics)
        gbps = self.topo.link(
            self.topo.port(self.hosts[0], 0).name, self.topo.port(self.hosts[0], 0).leaf
        ).capacity_gbps
        for ports in nics:
            self.topo.add_link(ports[0].name, leaf, gbps)
        return name

    def job_hosts_in_ring(self, stage: int = 0) -> list[str]:
        """A stage's hosts in ring order."""
        from c4.traffic.collectives import ordered_hosts

        return ordered_hosts(self.stage_jobs[stage])

    def comm_of(self, node: str) -> tuple[str, int, int]:
        """(communicator id, rank of GPU 0 of the node in it, size) of the node's data-parallel group."""
        s = self.stage_of[node]
        return f"0x7c4c4c4c{s + 1:08x}", self.stages[s].index(node) * self.gpus, self.dp * self.gpus

    def pp_comm(self, a: str, b: str) -> str:
        """Communicator id of the pipeline link between two adjacent stages' nodes."""
        s = min(self.stage_of[a], self.stage_of[b])
        return f"0x9e9e9e9e{s + 1:04x}{self.stages[s].index(a if self.stage_of[a] == s else b):04x}"

    def rank_of(self, node: str, gpu: int) -> int:
        """Global rank of a GPU (host-major)."""
        return self.hosts.index(node) * self.gpus + gpu

    def _routing(self) -> tuple[list[tuple[list[int], float]], np.ndarray]:
        """Sub-flows (one per QP or planned piece) and the flow each belongs to."""
        if self.routing == "plan":
            plan = Planner(self.topo, max_qps=max(self.qps, 4)).plan(self.flows)
            return plan.subflows(), np.array([p.flow for p in plan.pieces])
        return ecmp_subflows(self.topo, self.flows, self.seed), np.repeat(
            np.arange(len(self.flows)), [f.qps for f in self.flows]
        )

    def _apply_links(self, t: float) -> list[dict[str, Any]]:
        """Set link states from the faults active at t; returns link change events."""
        events = []
        for f in self.faults:
            if f.kind not in ("nic_degraded", "link_down", "link_flap", "spine_link_degraded"):
                continue
            port = self.topo.port(f.node, f.nic) if f.node else None
            if f.kind == "spine_link_degraded":
                a, b = self.topo.leaves[0], self.topo.spines[0]
            else:
                a, b = port.name, port.leaf
            want = "up"
            rate = None
            if f.active(t):
                if f.kind == "nic_degraded" or f.kind == "spine_link_degraded":
                    want, rate = "degraded", self.topo.link(a, b).capacity_gbps * f.factor
                elif f.kind == "link_down":
                    want = "down"
                elif f.kind == "link_flap":
                    want = "down" if int((t - f.at_s) / 2) % 2 == 0 else "up"  # 2 s down, 2 s up
            link = self.topo.link(a, b)
            if link.state != want or link.rate_gbps != rate:
                self.topo.set_state(a, b, want, rate)
                events.append(
                    {
                        "node": f.node,
                        "nic": f.nic,
                        "state": want,
                        "rate_gbps": rate or link.capacity_gbps,
                        "kind": f.kind,
                    }
                )
        return events

    def step(self) -> StepOutput:
        """Advance one iteration (compute phase, then the all-reduce)."""
        t0 = self.t
        link_events = self._apply_links(t0)
        active = [f for f in self.faults if f.active(t0)]
        compute = {}
        for h in self.hosts:
            for g in range(self.gpus):
                c = self.compute_s * (1 + self.rng.uniform(-self.jitter, self.jitter))
                for f in active:
                    if f.kind == "thermal_throttle" and f.node == h and f.gpu == g:
                        c *= 1 + f.factor
                    if f.kind in ("uniform_slowdown",):
                        c *= 1 + f.factor
                    if f.kind == "transient_slowdown" and f.node == h:
                        c *= 1 + f.factor
                compute[(h, g)] = c
        cap = capacities(self.topo)
        if link_events or self._sub is None:  # routes only change when links do
            self._sub = self._routing()
        sub, flow_of = self._sub
        cong = [f for f in active if f.kind == "ecmp_congestion"]
        congested_nics: set[tuple[str, int]] = set()
        n_main = len(sub)
        if cong and self.bg_hosts:  # the other job's ring runs now: ECMP puts some of its flows on our links
            bg = Job(
                "other-job",
                self.bg_hosts,
                channels=self.nics,
                message_bytes=self.message_bytes * 4,
                shuffle_seed=self.seed + 99,
                gpus_per_host=self.gpus,
            )
            bg_sub = ecmp_subflows(self.topo, job_flows(bg, self.topo), self.seed + 99)
            shared = {lid for links, _ in bg_sub for lid in links[1:-1]}  # switch links the other job uses
            for (links, _b), fi in zip(sub, flow_of, strict=True):
                if shared & set(links[1:-1]):
                    f = self.flows[fi]
                    congested_nics.add((f.src, f.src_nic))
                    congested_nics.add((f.dst, f.dst_nic))
            sub = sub + bg_sub
        sim = FluidSim(cap, sub)
        rates = sim.rates(np.ones(len(sub), dtype=bool))
        sub_time = np.array(
            [b / r if r > 0 else np.inf for (_, b), r in zip(sub[:n_main], rates[:n_main], strict=True)]
        )
        per_flow_time = np.zeros(len(self.flows))
        np.maximum.at(per_flow_time, flow_of, sub_time)  # a connection is done when its last QP is
        finite = np.isfinite(per_flow_time)
        comm_s = float(np.max(per_flow_time[finite])) if finite.any() else 0.0
        link_stalled = not finite.all()  # a connection crosses a down link: the collective waits for it
        hang_rank = next((f for f in active if f.kind == "rank_hang"), None)
        comm_hang = next((f for f in active if f.kind == "comm_hang"), None)
        lost = [f for f in self.faults if f.kind == "xid" and f.xid == 79 and f.at_s <= t0]
        ranks = []
        arrive_last = max(compute.values())
        for h in self.hosts:
            for g in range(self.gpus):
                r = self.rank_of(h, g)
                stuck = (hang_rank and hang_rank.node == h and hang_rank.gpu == g) or any(
                    f.node == h and f.gpu == g for f in lost
                )
                ranks.append(
                    RankStep(
                        r,
                        h,
                        g,
                        not stuck,
                        t0 + compute[(h, g)],
                        (arrive_last - compute[(h, g)] + comm_s) * 1e6,
                    )
                )
        blocked = any(not r.issued for r in ranks) or comm_hang is not None or link_stalled
        duration = arrive_last + (comm_s if not blocked else 0.0)
        conns = []
        nic_bytes: dict[tuple[str, int], float] = {}
        if not blocked:
            for f, net_s in zip(self.flows, per_flow_time, strict=True):
                b = f.bytes
                conns.append(
                    {
                        "kind": "pp" if f.job == "pp" else "dp",
                        "src": f.src,
                        "dst": f.dst,
                        "nic": f.src_nic,
                        "channel": f.channel,
                        "bytes": b,
                        "net_us": net_s * 1e6,
                        "wait_peer_us": max(0.0, comm_s - net_s) * 1e6 * 0.5,
                        "wait_gpu_us": 50.0,
                    }
                )
                nic_bytes[(f.src, f.src_nic)] = nic_bytes.get((f.src, f.src_nic), 0) + b
        elif comm_hang is not None:
            # every rank issued the collective; one connection makes no progress, the rest wait
            for f in self.flows:
                stalled = f.src == comm_hang.node and f.src_nic == comm_hang.nic
                conns.append(
                    {
                        "kind": "pp" if f.job == "pp" else "dp",
                        "src": f.src,
                        "dst": f.dst,
                        "nic": f.src_nic,
                        "channel": f.channel,
                        "bytes": 0.0 if stalled else f.bytes * 0.1,
                        "net_us": 0.0 if stalled else 1e3,
                        "wait_peer_us": duration * 1e6,
                        "wait_gpu_us": 0.0,
                    }
                )
        gpu_state = {}
        for h in self.hosts:
            for g in range(self.gpus):
                st = {
                    "util_gpu_pct": 97.0,
                    "power_w": 650.0,
                    "temp_gpu_c": 62.0,
                    "clocks_event_reasons": 0,
                    "clock_sm_mhz": 1980,
                    "pcie_gen_cur": 5,
                    "remapped_rows_failure": 0,
                }
                for f in active:
                    if f.node != h or f.gpu != g:
                        continue
                    if f.kind == "thermal_throttle":
                        st.update(temp_gpu_c=89.0, clocks_event_reasons=0x40, clock_sm_mhz=1200)
                    if f.kind == "pcie_downtrain":
                        st.update(pcie_gen_cur=3)
                    if f.kind == "row_remap_failure":
                        st.update(remapped_rows_failure=1)
                if blocked:
                    st["util_gpu_pct"] = 100.0  # NCCL kernels spin while waiting
                    if hang_rank is not None and hang_rank.node == h and hang_rank.gpu == g:
                        st["util_gpu_pct"] = 0.0  # the hung rank is stuck on the host: its GPU idles
                gpu_state[(h, g)] = st
        events = [
            {"node": f.node, "gpu": f.gpu, "xid": f.xid, "at_s": f.at_s}
            for f in self.faults
            if f.kind in ("xid", "row_remap_failure") and t0 <= f.at_s < t0 + max(duration, 1e-9)
        ]
        for e in events:
            if e["xid"] == 0:
                e["xid"] = 64
        nvlink_errors = {(e["node"], e["gpu"]): 25 for e in events if e["xid"] == 74}
        restart = next(
            (f for f in self.faults if f.kind == "job_restart" and t0 <= f.at_s < t0 + max(duration, 1e-9)),
            None,
        )
        out = StepOutput(
            t0,
            self.seq,
            ranks,
            conns,
            nic_bytes,
            gpu_state,
            events,
            link_events,
            duration,
            blocked,
            congested_nics,
            nvlink_errors,
            restart is not None,
        )
        if (
            restart is not None
        ):  # the job is relaunched from its checkpoint: a pause, then sequence numbers anew
            self.seq = 0
            self.t += 5.0
            return out
        if blocked:
            self.t += max(1.0, self.compute_s)  # the job is stuck: time passes, the collective never ends
        else:
            self.seq += 1
            self.t += duration
        return out

    def ground_truth(self) -> list[dict[str, Any]]:
        """Ground truth of every scripted fault."""
        rows = [f.truth() for f in self.faults]
        for f, row in zip(self.faults, rows, strict=True):
            if f.kind == "spine_link_degraded":
                row["component"] = switch_link_name(self.topo.leaves[0], self.topo.spines[0])
        return rows

    def connection_paths(self) -> dict[tuple[str, str, int], list[str]]:
        """The fabric model's answer for each connection: (src node, dst node, channel) -> directed switch links."""
        if self._sub is None:
            self._sub = self._routing()
        sub, flow_of = self._sub
        switches = set(self.topo.leaves) | set(self.topo.spines) | set(self.topo.cores)
        out: dict[tuple[str, str, int], list[str]] = {}
        for (links, _b), fi in zip(sub, flow_of, strict=True):
            f = self.flows[fi]
            names = out.setdefault((f.src, f.dst, f.channel), [])
            for lid in links:
                link = self.topo.links[lid]
                if link.src in switches and link.dst in switches and f"{link.src}->{link.dst}" not in names:
                    names.append(f"{link.src}->{link.dst}")
        return out

    def switch_capacity_gbps(self) -> dict[str, float]:
        """Nominal rate of every directed switch-to-switch link."""
        switches = set(self.topo.leaves) | set(self.topo.spines) | set(self.topo.cores)
        return {
            f"{x.src}->{x.dst}": x.capacity_gbps
            for x in self.topo.links
            if x.src in switches and x.dst in switches
        }


def switch_link_name(a: str, b: str) -> str:
    """A cable between two switches, named the same whichever way it is walked."""
    return "<->".join(sorted((a, b)))
