"""The seeded scenario library C4D is scored on: every fault kind of the twin, several placements each, plus negatives."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from c4.sim.twin import Fault

#: Positive scenario kinds (name -> how to draw one fault); Xids are split by number.
POSITIVE_KINDS = (
    "nic_degraded",
    "link_flap",
    "link_down",
    "spine_link_degraded",
    "ecmp_congestion",
    "xid48",
    "xid74",
    "xid79",
    "xid94",
    "xid95",
    "row_remap_failure",
    "thermal_throttle",
    "thermal_throttle_remap",
    "rank_hang",
    "comm_hang",
    "pcie_downtrain",
    "straggler",
    "straggler_verbose",
)
#: Job-structure kinds (issue 18): two 3D-parallel jobs share the cluster, one carries the cause; the
#: twin's truth names the cause ranks, the ranks that only wait on them (victims) and the true slowdown.
JOB_KINDS = {
    "job_slow_worker": "slow_worker",
    "job_stage_imbalance": "stage_imbalance",
    "job_data_imbalance": "data_imbalance",
    "job_cpu_stall": "cpu_stall",
    "job_slow_comm": "slow_comm",
    "job_hang": "rank_hang",
}
POSITIVE_KINDS += tuple(JOB_KINDS)
#: Finding classes that name each job kind's cause (a finding of another class on the right place is a false
#: positive): its attribution class; for a slow worker also NCCL Inspector's straggler (``non_comm_slow``: the
#: rank's own work is slow), which is how a job without a step trace is judged; for a slow pipeline link also
#: the connection detector's ``comm_slow`` on the sending NIC; for a hang either hang class (the hung rank, or
#: the communicator it stalls).
JOB_CLASSES = {
    "job_slow_worker": ("slow_worker", "non_comm_slow"),
    "job_stage_imbalance": ("stage_imbalance",),
    "job_data_imbalance": ("data_imbalance",),
    "job_cpu_stall": ("cpu_stall",),
    "job_slow_comm": ("slow_comm", "comm_slow"),
    "job_hang": ("non_comm_hang", "comm_hang"),
}
#: Negative kinds: nothing may be raised ("healthy" injects no fault at all; "job_healthy": two
#: 3D-parallel jobs, jitter only).
NEGATIVE_KINDS = ("healthy", "uniform_slowdown", "transient_slowdown", "job_restart", "job_healthy")


@dataclass
class Scenario:
    """One seeded run of the twin: a cluster size, one fault (or a negative) and how long to watch."""

    name: str
    kind: str
    seed: int
    nodes: int
    faults: list[Fault] = field(default_factory=list)
    cluster: dict = field(default_factory=dict)  # further ClusterTwin settings (e.g. cuda_visible_devices)
    onset_s: float = 0.0
    watch_s: float = 25.0  # simulated seconds after onset
    jobs: list[dict] = field(default_factory=list)  # 3D-parallel jobs (a JobsTwin scenario) when given

    @property
    def negative(self) -> bool:
        """A scenario where nothing should be raised."""
        return self.kind in NEGATIVE_KINDS


def job_layout(nodes: int, rng: random.Random) -> list[dict]:
    """Two jobs sharing ``nodes`` 8-GPU nodes: TP 8 x PP 2 x DP on the first half, TP 8 x PP 4 on the rest
    (TP 4 x PP 2 with two replicas per node, or expert parallelism, drawn from the seed)."""
    half = nodes // 2
    a = {"name": "train-a", "tp": 8, "pp": 2, "dp": half // 2, "microbatches": 8, "first_node": 0}
    if rng.random() < 0.3:
        a.update(tp=4, dp=half)
    b = {
        "name": "train-b",
        "tp": 8,
        "pp": 4,
        "dp": (nodes - half) // 4,
        "microbatches": 8,
        "first_node": half,
    }
    if rng.random() < 0.3 and b["dp"] >= 2:
        b.update(ep=2, distributed_optimizer=True)
    return [a, b]


def draw_job(kind: str, seed: int, nodes: int, gpus: int = 8) -> Scenario:
    """One job-structure scenario: two jobs, the cause in one of them at a drawn place and strength."""
    rng = random.Random(f"{kind}:{seed}")
    jobs = job_layout(nodes, rng)
    target = rng.choice(jobs)
    if kind == "job_data_imbalance" and target["dp"] < 2:  # one replica: nothing to be imbalanced against
        target = jobs[0]
    first = target["first_node"]
    span = target["tp"] * target["pp"] * target["dp"] // gpus
    node = f"host{first + rng.randrange(span)}"
    gpu = rng.randrange(gpus)
    onset = float(rng.randint(12, 20))
    sc = Scenario(f"{kind}-{seed}", kind, seed, nodes, onset_s=onset, jobs=jobs, watch_s=25.0)
    if kind == "job_healthy":
        return sc
    fault = JOB_KINDS[kind]
    if fault == "slow_worker":
        sc.faults = [Fault(fault, onset, node=node, gpu=gpu, factor=rng.uniform(1.5, 2.5))]
    elif fault == "stage_imbalance":
        sc.onset_s = 0.0
        sc.faults = [
            Fault(
                fault,
                0.0,
                job=target["name"],
                stage=rng.randrange(target["pp"]),
                factor=rng.uniform(1.4, 2.0),
            )
        ]
    elif fault == "data_imbalance":
        sc.faults = [Fault(fault, onset, job=target["name"], factor=rng.uniform(1.4, 1.8))]
    elif fault == "cpu_stall":
        sc.faults = [Fault(fault, onset, node=node, gpu=gpu, factor=20.0, stall_s=rng.uniform(0.1, 0.2))]
    elif fault == "slow_comm":
        # the link from a rank of a stage that has a next stage
        stage_nodes = span // target["pp"]
        node = f"host{first + rng.randrange(stage_nodes * (target['pp'] - 1))}"
        sc.faults = [Fault(fault, onset, node=node, gpu=gpu, factor=rng.uniform(4.0, 8.0))]
    else:  # rank_hang: one rank of one job stops; the other job runs on
        sc.faults = [Fault(fault, onset, node=node, gpu=gpu)]
    return sc


def draw(kind: str, seed: int, nodes: int, gpus: int = 8, nics: int = 8) -> Scenario:
    """One scenario of a kind, its placement and onset drawn from the seed."""
    if kind in JOB_KINDS or kind == "job_healthy":
        return draw_job(kind, seed, nodes, gpus)
    rng = random.Random(f"{kind}:{seed}")
    node = f"host{rng.randrange(nodes)}"
    gpu, nic = rng.randrange(gpus), rng.randrange(nics)
    onset = float(rng.randint(8, 16))
    sc = Scenario(f"{kind}-{seed}", kind, seed, nodes, onset_s=onset)
    if kind.startswith("xid"):
        sc.faults = [Fault("xid", onset, node=node, gpu=gpu, xid=int(kind[3:]))]
    elif kind == "healthy":
        pass
    elif kind == "transient_slowdown":  # a blip shorter than the suppression threshold (iterations)
        sc.faults = [
            Fault(kind, onset, duration_s=rng.choice([1.5, 2.5]), node=node, factor=rng.uniform(0.2, 0.5))
        ]
    elif kind == "uniform_slowdown":
        sc.faults = [Fault(kind, onset, duration_s=rng.uniform(5, 15), factor=rng.uniform(0.1, 0.5))]
    elif kind == "job_restart":
        sc.faults = [Fault(kind, onset)]
    elif kind == "ecmp_congestion":
        sc.faults = [Fault(kind, onset)]
    elif kind == "spine_link_degraded":
        sc.faults = [Fault(kind, onset, factor=rng.uniform(0.2, 0.4))]
    elif kind == "link_flap":
        sc.faults = [Fault(kind, onset, duration_s=20, node=node, nic=nic)]
    elif kind in ("nic_degraded",):
        sc.faults = [Fault(kind, onset, node=node, nic=nic, factor=rng.uniform(0.25, 0.5))]
    elif kind == "thermal_throttle":
        sc.faults = [Fault(kind, onset, node=node, gpu=gpu, factor=rng.uniform(0.15, 0.4))]
    elif kind in ("straggler", "straggler_verbose"):  # a GPU slowed with no hardware sign: only NCCL shows it
        sc.faults = [Fault("slow_gpu", onset, node=node, gpu=gpu, factor=rng.uniform(0.15, 0.4))]
        sc.cluster = {
            "inspector_verbose": kind == "straggler_verbose"
        }  # NCCL Inspector's default form, or verbose
    elif (
        kind == "thermal_throttle_remap"
    ):  # the node runs CUDA_VISIBLE_DEVICES=7,6,...,0: rank % 8 is not its GPU
        sc.faults = [Fault("thermal_throttle", onset, node=node, gpu=gpu, factor=rng.uniform(0.15, 0.4))]
        sc.cluster = {"cuda_visible_devices": {node: list(range(gpus))[::-1]}}
    else:
        sc.faults = [Fault(kind, onset, node=node, gpu=gpu, nic=nic)]
    return sc


def library(per_kind: int, negatives_per_kind: int, nodes: int, seed: int = 0) -> list[Scenario]:
    """per_kind scenarios of every positive kind and negatives_per_kind of every negative one."""
    out = [draw(k, seed + i, nodes) for k in POSITIVE_KINDS for i in range(per_kind)]
    out += [draw(k, seed + i, nodes) for k in NEGATIVE_KINDS for i in range(negatives_per_kind)]
    return out
