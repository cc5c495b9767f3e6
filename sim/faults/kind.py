"""What a fault is (the ``Fault`` a scenario injects) and what its kind knows (the ``FaultKind`` hooks).

A kind is one module in this folder, listed in ``c4.sim.faults.KIND_MODULES``. It overrides only the
hooks it needs; the defaults change nothing. ``ClusterTwin.step`` calls the cluster hooks in the order
of one iteration (links, compute, other traffic, stuck ranks, stalled connections, job restart),
``NodeWriter.apply`` calls ``expose`` for every fault on its node, and ``truth`` is the fault's
sim_ground_truth row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # the twin and the writer import this module: their types only, never at run time
    from c4.sim.jobs_twin import JobsTwin
    from c4.sim.node_files import NodeWriter
    from c4.sim.pipeline import Cause
    from c4.sim.twin import ClusterTwin, StepOutput

#: A routed piece of a flow: the link ids it crosses and its bytes (what ``c4.traffic.fluid`` takes).
Subflow = tuple[list[int], float]


@dataclass
class Fault:
    """One injected fault: its kind, when, where, and how strong."""

    kind: str
    at_s: float
    duration_s: float = float("inf")
    node: str = ""
    gpu: int = 0
    nic: int = 0
    xid: int = 0
    factor: float = 0.5  # slowdown / rate factor (job causes: what the op time is multiplied by)
    job: str = ""  # jobs scenarios: the job a job-level cause acts on (default: the job on ``node``)
    stage: int = 0  # stage_imbalance: the pipeline stage that carries more work
    stall_s: float = 0.0  # cpu_stall: the pause before one forward per step (a GC pause)
    host_state: str = "busy"  # cpu_stall: what its host does meanwhile: busy (loader, GC) or iowait (storage)

    def active(self, t: float) -> bool:
        """Whether the fault is in effect at simulated time t."""
        return self.at_s <= t < self.at_s + self.duration_s

    def begins_within(self, t0: float, duration_s: float) -> bool:
        """Whether the fault's onset falls in the iteration [t0, t0 + duration_s) (a blocked one counts 1 ns)."""
        return t0 <= self.at_s < t0 + max(duration_s, 1e-9)


class FaultKind:
    """How one kind of fault changes the cluster, what it leaves on its node, and its ground truth."""

    #: Ground truth: the class C4D should report, the component type it should name, the action it should advise.
    expected_class: ClassVar[str] = "none"
    component_type: ClassVar[str] = "none"  # gpu | nic_port | switch_link | none
    expected_action: ClassVar[str] = "none"

    # -- the cluster (ClusterTwin) --------------------------------------------------------------

    def prepare(self, twin: ClusterTwin, fault: Fault) -> None:
        """Change the cluster before the job is laid out (e.g. add another job's hosts); once per fault."""

    def link_ends(self, twin: ClusterTwin, fault: Fault) -> tuple[str, str] | None:
        """The fabric link (its two ends) whose state this fault sets; None: it sets no link."""
        return None

    def link_state(self, twin: ClusterTwin, fault: Fault, t: float) -> tuple[str, float | None]:
        """(state, rate in Gb/s or None for the nominal one) of ``link_ends`` while the fault is active at t."""
        return "up", None

    def compute_factor(self, fault: Fault, node: str, gpu: int) -> float:
        """What the active fault multiplies one GPU's compute time by in this iteration."""
        return 1.0

    def other_traffic(self, twin: ClusterTwin, fault: Fault) -> dict[str, list[Subflow]]:
        """Sub-flows of other jobs that share the fabric while the fault is active, by job name."""
        return {}

    def stuck_ranks(self, twin: ClusterTwin, fault: Fault, t: float) -> set[tuple[str, int]]:
        """(node, GPU) whose rank never issues the collective at t; asked of every fault, active or not."""
        return set()

    def stalled_connections(self, twin: ClusterTwin, fault: Fault) -> set[tuple[str, int]]:
        """(node, NIC) whose sends make no progress while every rank has issued the collective (active faults)."""
        return set()

    def restarts_job(self, twin: ClusterTwin, fault: Fault) -> bool:
        """Whether the fault's onset, in this iteration, relaunches the job from its checkpoint."""
        return False

    def cause(self, twin: JobsTwin, fault: Fault) -> tuple[str, Cause] | None:
        """In a scenario with ``jobs:``: (job name, the pipeline ``Cause``) the fault is; None: it is none."""
        return None

    # -- the node (NodeWriter) ------------------------------------------------------------------

    def expose(self, writer: NodeWriter, fault: Fault, out: StepOutput) -> None:
        """Leave this iteration's signature in the files of the fault's node: NVML, sysfs, kernel log."""

    # -- the ground truth ----------------------------------------------------------------------

    def action(self, fault: Fault) -> str:
        """The action C4D should advise."""
        return self.expected_action

    def component(self, twin: ClusterTwin, fault: Fault) -> str:
        """The component C4D should name, as its detectors name it."""
        return {
            "gpu": f"{fault.node}/gpu{fault.gpu}",
            "nic_port": f"{fault.node}/nic{fault.nic}",
            "switch_link": fault.node,
            "none": "",
        }.get(self.component_type, fault.node)

    def truth(self, twin: ClusterTwin, fault: Fault) -> dict[str, Any]:
        """The fault's ground-truth row (the scenario-independent columns of sim_ground_truth)."""
        return {
            "fault": fault.kind,
            "component_type": self.component_type,
            "component": self.component(twin, fault),
            "onset_s": fault.at_s,
            "end_s": None if fault.duration_s == float("inf") else fault.at_s + fault.duration_s,
            "expected_class": self.expected_class,
            "expected_action": self.action(fault),
            "xid": fault.xid or None,
        }


def host_port_link(twin: ClusterTwin, fault: Fault) -> tuple[str, str]:
    """The cable between the fault's NIC port and its leaf switch."""
    port = twin.topo.port(fault.node, fault.nic)
    return port.name, port.leaf


def degraded_rate(twin: ClusterTwin, ends: tuple[str, str], fault: Fault) -> tuple[str, float]:
    """A link running at ``fault.factor`` of its nominal rate."""
    return "degraded", twin.topo.link(*ends).capacity_gbps * fault.factor


class JobCauseKind(FaultKind):
    """A cause inside a training job (sim/pipeline.py): only a scenario with ``jobs:`` can inject it."""

    def prepare(self, twin: ClusterTwin, fault: Fault) -> None:
        """The single-job twin has no job structure to slow: refuse the scenario."""
        raise ValueError(f"fault kind {fault.kind} needs a scenario with jobs: (see sim/jobs_twin.py)")
