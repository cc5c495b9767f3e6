"""Digital twin of a training cluster: a job's iterations on the fabric model, with injected faults.

Pure simulation (no files): every step of simulated time yields what each node's hardware and
NCCL would show; ``c4.sim.node_files`` writes it where the real samplers read. Per-connection
throughput comes from the max-min fluid model of the current routing (ECMP or a C4P plan) and
link states, so congestion and degraded links slow collectives the way they would on a fabric.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from c4.sim.faults import FAULT_KINDS, Fault
from c4.sim.planned_routes import PlannedPiece, planned_pieces, planned_subflows
from c4.traffic.collectives import Flow, Job, job_flows, ordered_hosts
from c4.traffic.fluid import FluidSim
from c4.traffic.generators import leaf_spine
from c4.traffic.planner import Plan, Planner
from c4.traffic.routing import capacities, ecmp_subflows
from c4.traffic.topology import Host, NicPort, Topology

__all__ = ["FAULT_KINDS", "ClusterTwin", "Fault", "LinkChange", "RankStep", "StepOutput", "load_scenario"]


def load_scenario(path: Path | str) -> dict[str, Any]:
    """A scenario YAML: cluster size, job, routing and the faults to inject."""
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
    """One iteration: per-rank collective records, per-connection timing, link changes and congestion.

    What a fault leaves on its own node (NVML gauges, Xid lines, RDMA error counters) is not here: the
    node writer asks each fault's kind (``FaultKind.expose``).
    """

    t: float
    seq: int
    ranks: list[RankStep]
    conns: list[dict[str, Any]]
    nic_bytes: dict[tuple[str, int], float]  # (node, nic) -> bytes sent this step
    link_changes: list[LinkChange]
    duration_s: float
    blocked: bool = False  # the collective did not complete (a hang): no rank finishes it
    congested_nics: set = field(default_factory=set)  # (node, nic) whose flows met ECN-marking congestion
    restarted: bool = False  # the job restarted: collective sequence numbers begin again


@dataclass
class LinkChange:
    """A fabric link a fault set to a new state in this iteration."""

    fault: Fault
    node: str
    nic: int
    state: str  # up | down | degraded
    rate_gbps: float


@dataclass
class _Network:
    """The all-reduce on the fabric: when each connection finishes and what congestion it met."""

    per_flow_s: np.ndarray
    comm_s: float
    link_stalled: bool  # a connection crosses a down link: the collective waits for it
    congested_nics: set[tuple[str, int]]


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
    routing: str = "ecmp"  # ecmp | plan (C4P replans by itself whenever a link changes) | applied (use_plan)
    qps: int = 1
    seed: int = 0
    pp: int = 1  # pipeline stages: stage s runs on nodes [s*dp, (s+1)*dp), dp = nodes / pp
    activation_bytes: float = 512 << 20  # p2p bytes between adjacent stages per iteration (each way)
    # NCCL_INSPECTOR_DUMP_VERBOSE of the simulated job: True writes event_trace_* (collective start times),
    # NCCL's default (False) writes none; the straggler detector reads arrival from execution times then.
    inspector_verbose: bool = False
    faults: list[Fault] = field(default_factory=list)
    # node -> the NVML indices of its GPUs in CUDA's order (CUDA_VISIBLE_DEVICES): local rank k drives GPU
    # cuda_visible_devices[node][k]; a node not named runs local rank k on GPU k
    cuda_visible_devices: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.topo: Topology = leaf_spine(
            self.nodes,
            min(self.leaves, self.nodes),
            self.spines,
            nics_per_host=self.nics,
            gpus_per_host=self.gpus,
        )
        self.hosts = list(self.topo.hosts)
        self._local_of: dict[str, dict[int, int]] = {}
        for node, order in self.cuda_visible_devices.items():
            if node not in self.topo.hosts or sorted(order) != list(range(self.gpus)):
                raise ValueError(
                    f"cuda_visible_devices[{node!r}] = {order}: expected a host of the cluster and an "
                    f"order of its GPUs 0..{self.gpus - 1}"
                )
            self._local_of[node] = {gpu: k for k, gpu in enumerate(order)}
        self.other_job_hosts: list[str] = []  # hosts of other jobs sharing the fabric (not monitored here)
        for f in self.faults:
            FAULT_KINDS[f.kind].prepare(self, f)
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
        self._sub: list | None = None
        self._applied: list[PlannedPiece] | None = None  # the plan use_plan gave, followed until the next

    def add_other_job_host(self, name: str, leaf: str) -> str:
        """A host of another job, cabled to ``leaf`` like ours."""
        i = len(self.topo.hosts)
        nics = [[NicPort(name, n, 0, leaf, f"10.200.{i & 255}.{n + 1}", rail=n)] for n in range(self.nics)]
        self.topo.hosts[name] = Host(name, self.gpus, nics)
        gbps = self.topo.link(
            self.topo.port(self.hosts[0], 0).name, self.topo.port(self.hosts[0], 0).leaf
        ).capacity_gbps
        for ports in nics:
            self.topo.add_link(ports[0].name, leaf, gbps)
        return name

    def job_name(self, node: str) -> str:
        """The job a node runs (the agents' ``job`` label): this twin runs one, "train"."""
        return "train"

    def job_hosts_in_ring(self, stage: int = 0) -> list[str]:
        """A stage's hosts in ring order."""
        return ordered_hosts(self.stage_jobs[stage])

    def comm_of(self, node: str) -> tuple[str, int, int]:
        """(communicator id, rank of GPU 0 of the node in it, size) of the node's data-parallel group."""
        s = self.stage_of[node]
        return f"0x7c4c4c4c{s + 1:08x}", self.stages[s].index(node) * self.gpus, self.dp * self.gpus

    def pp_comm(self, a: str, b: str) -> str:
        """Communicator id of the pipeline link between two adjacent stages' nodes."""
        s = min(self.stage_of[a], self.stage_of[b])
        return f"0x9e9e9e9e{s + 1:04x}{self.stages[s].index(a if self.stage_of[a] == s else b):04x}"

    def local_rank(self, node: str, gpu: int) -> int:
        """The local rank (CUDA device number) of the process driving NVML GPU ``gpu`` of a node."""
        return self._local_of[node][gpu] if node in self._local_of else gpu

    def gpu_of(self, node: str, local: int) -> int:
        """The NVML index of the GPU local rank ``local`` of a node drives."""
        return self.cuda_visible_devices[node][local] if node in self._local_of else local

    def global_rank(self, node: str, local: int) -> int:
        """Global rank of a node's local rank (host-major)."""
        return self.hosts.index(node) * self.gpus + local

    def rank_of(self, node: str, gpu: int) -> int:
        """Global rank of the process driving NVML GPU ``gpu`` of a node."""
        return self.global_rank(node, self.local_rank(node, gpu))

    def pid_of(self, node: str, local: int) -> int:
        """Process id of a node's local rank (one process per GPU, as torchrun starts them)."""
        return 20000 + 100 * self.hosts.index(node) + local

    def use_plan(self, plan: Plan | list[dict[str, Any]]) -> None:
        """Route the job by this C4P plan from now on (a Plan, or the `plans` rows of one plan), as a
        source-port or switch-route hook would: each piece on its path; a piece whose path crosses a dead
        link is re-hashed by the switches over their live next hops. Raises PlanMismatch when the plan
        does not route exactly the twin's connections."""
        pieces = planned_pieces(plan)
        planned_subflows(self.topo, self.flows, pieces, self.seed)  # refuse a plan that does not fit now
        self._applied = pieces
        self.routing = "applied"
        self._sub = None

    def _routing(self) -> tuple[list[tuple[list[int], float]], np.ndarray]:
        """Sub-flows (one per QP or planned piece) and the flow each belongs to."""
        if self.routing == "applied" and self._applied is not None:
            sub, owner = planned_subflows(self.topo, self.flows, self._applied, self.seed)
            return sub, np.array(owner)
        if self.routing == "plan":
            plan = Planner(self.topo, max_qps=max(self.qps, 4)).plan(self.flows)
            return plan.subflows(), np.array([p.flow for p in plan.pieces])
        return ecmp_subflows(self.topo, self.flows, self.seed), np.repeat(
            np.arange(len(self.flows)), [f.qps for f in self.flows]
        )

    def _apply_links(self, t: float) -> list[LinkChange]:
        """Set the state of every link a fault drives, as of time t; returns the links that changed."""
        changes = []
        for f in self.faults:
            kind = FAULT_KINDS[f.kind]
            ends = kind.link_ends(self, f)
            if ends is None:
                continue
            want, rate = kind.link_state(self, f, t) if f.active(t) else ("up", None)
            link = self.topo.link(*ends)
            if link.state != want or link.rate_gbps != rate:
                self.topo.set_state(*ends, want, rate)
                changes.append(LinkChange(f, f.node, f.nic, want, rate or link.capacity_gbps))
        return changes

    def _compute_times(self, active: list[Fault]) -> dict[tuple[str, int], float]:
        """Each GPU's compute phase: the nominal time with jitter, times what the active faults do to it."""
        compute = {}
        for h in self.hosts:
            for g in range(self.gpus):
                c = self.compute_s * (1 + self.rng.uniform(-self.jitter, self.jitter))
                for f in active:
                    c *= FAULT_KINDS[f.kind].compute_factor(f, h, g)
                compute[(h, g)] = c
        return compute

    def _network(self, active: list[Fault], links_changed: bool) -> _Network:
        """Connection times from the fluid model of the current routes, other jobs' traffic included."""
        cap = capacities(self.topo)
        if links_changed or self._sub is None:  # routes only change when links do
            self._sub = self._routing()
        sub, flow_of = self._sub
        other: dict[str, list] = {}
        for f in active:
            other.update(FAULT_KINDS[f.kind].other_traffic(self, f))
        other_sub = [piece for pieces in other.values() for piece in pieces]
        congested: set[tuple[str, int]] = set()
        if other_sub:  # other jobs' flows on our switch links: ECN marks at both ends of ours
            shared = {lid for links, _ in other_sub for lid in links[1:-1]}
            for (links, _b), fi in zip(sub, flow_of, strict=True):
                if shared & set(links[1:-1]):
                    f = self.flows[fi]
                    congested.add((f.src, f.src_nic))
                    congested.add((f.dst, f.dst_nic))
        n_main = len(sub)
        fluid = FluidSim(cap, sub + other_sub)
        if self.routing == "applied":
            # an applied plan's pieces differ in size (splits, degraded links): rates are recomputed as
            # pieces finish, as the NICs' rate control would; ECMP and "plan" keep one-shot max-min rates
            sub_time = fluid.finish_times_s()[:n_main]
        else:
            rates = fluid.rates(np.ones(n_main + len(other_sub), dtype=bool))
            sub_time = np.array(
                [b / r if r > 0 else np.inf for (_, b), r in zip(sub, rates[:n_main], strict=True)]
            )
        per_flow = np.zeros(len(self.flows))
        np.maximum.at(per_flow, flow_of, sub_time)  # a connection is done when its last QP is
        finite = np.isfinite(per_flow)
        comm_s = float(np.max(per_flow[finite])) if finite.any() else 0.0
        return _Network(per_flow, comm_s, not finite.all(), congested)

    def _ranks(
        self, t0: float, compute: dict[tuple[str, int], float], comm_s: float, stuck: set[tuple[str, int]]
    ) -> list[RankStep]:
        """Every rank's record: it arrives when its compute ends and waits for the last one."""
        arrive_last = max(compute.values())
        return [
            RankStep(
                self.rank_of(h, g),
                h,
                g,
                (h, g) not in stuck,
                t0 + compute[(h, g)],
                (arrive_last - compute[(h, g)] + comm_s) * 1e6,
            )
            for h in self.hosts
            for g in range(self.gpus)
        ]

    def _late_receiver_s(self, f: Flow, compute: dict[tuple[str, int], float]) -> float:
        """How long a data-parallel sender waits for its receiver to arrive (its clear-to-send)."""
        if f.job == "pp":
            return 0.0
        src, dst = (f.src, self.gpu_of(f.src, f.src_nic)), (f.dst, self.gpu_of(f.dst, f.dst_nic))
        return max(0.0, compute[dst] - compute[src])

    def _connections(
        self,
        net: _Network,
        duration_s: float,
        blocked: bool,
        stalled: set[tuple[str, int]],
        compute: dict[tuple[str, int], float],
    ) -> tuple[list[dict[str, Any]], dict[tuple[str, int], float]]:
        """Per-connection records and bytes per NIC: a finished all-reduce, or one stuck on a stalled connection."""
        conns = []
        nic_bytes: dict[tuple[str, int], float] = {}
        if not blocked:
            for f, net_s in zip(self.flows, net.per_flow_s, strict=True):
                conns.append(
                    {
                        "kind": "pp" if f.job == "pp" else "dp",
                        "src": f.src,
                        "dst": f.dst,
                        "nic": f.src_nic,
                        "channel": f.channel,
                        "bytes": f.bytes,
                        "net_us": net_s * 1e6,
                        "wait_peer_us": (
                            max(0.0, net.comm_s - net_s) * 0.5 + self._late_receiver_s(f, compute)
                        )
                        * 1e6,
                        "wait_gpu_us": 50.0,
                    }
                )
                nic_bytes[(f.src, f.src_nic)] = nic_bytes.get((f.src, f.src_nic), 0) + f.bytes
        elif stalled:
            # every rank issued the collective; the stalled connections make no progress, the rest wait
            for f in self.flows:
                stuck = (f.src, f.src_nic) in stalled
                conns.append(
                    {
                        "kind": "pp" if f.job == "pp" else "dp",
                        "src": f.src,
                        "dst": f.dst,
                        "nic": f.src_nic,
                        "channel": f.channel,
                        "bytes": 0.0 if stuck else f.bytes * 0.1,
                        "net_us": 0.0 if stuck else 1e3,
                        "wait_peer_us": duration_s * 1e6,
                        "wait_gpu_us": 0.0,
                    }
                )
        return conns, nic_bytes

    def step(self) -> StepOutput:
        """Advance one iteration (compute phase, then the all-reduce)."""
        t0 = self.t
        link_changes = self._apply_links(t0)
        active = [f for f in self.faults if f.active(t0)]
        compute = self._compute_times(active)
        net = self._network(active, bool(link_changes))
        stuck: set[tuple[str, int]] = set()
        for f in self.faults:  # asked of every fault: a lost GPU stays lost after its fault "ends"
            stuck |= FAULT_KINDS[f.kind].stuck_ranks(self, f, t0)
        stalled: set[tuple[str, int]] = set()
        for f in active:
            stalled |= FAULT_KINDS[f.kind].stalled_connections(self, f)
        ranks = self._ranks(t0, compute, net.comm_s, stuck)
        blocked = any(not r.issued for r in ranks) or bool(stalled) or net.link_stalled
        duration = max(compute.values()) + (net.comm_s if not blocked else 0.0)
        conns, nic_bytes = self._connections(net, duration, blocked, stalled, compute)
        restarted = any(
            FAULT_KINDS[f.kind].restarts_job(self, f) and f.begins_within(t0, duration) for f in self.faults
        )
        out = StepOutput(
            t=t0,
            seq=self.seq,
            ranks=ranks,
            conns=conns,
            nic_bytes=nic_bytes,
            link_changes=link_changes,
            duration_s=duration,
            blocked=blocked,
            congested_nics=net.congested_nics,
            restarted=restarted,
        )
        if restarted:  # the job is relaunched from its checkpoint: a pause, then sequence numbers anew
            self.seq = 0
            self.t += 5.0
        elif blocked:
            self.t += max(1.0, self.compute_s)  # the job is stuck: time passes, the collective never ends
        else:
            self.seq += 1
            self.t += duration
        return out

    def collective_s(self) -> float:
        """Seconds one all-reduce takes on the fabric as it is now, under the current routing (inf: it cannot end)."""
        net = self._network([f for f in self.faults if f.active(self.t)], True)
        return float("inf") if net.link_stalled else net.comm_s

    def ground_truth(self) -> list[dict[str, Any]]:
        """Ground truth of every scripted fault."""
        return [FAULT_KINDS[f.kind].truth(self, f) for f in self.faults]

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
