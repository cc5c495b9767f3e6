"""Run one library scenario end to end in one process: twin -> production samplers -> collector ingest -> C4D."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from c4.agent.batcher import rows_to_table
from c4.agent.labels import context_from
from c4.agent.runner import build_samplers
from c4.analytics.fabric import FabricModel
from c4.analytics.runner import DiagnosisRunner
from c4.arrow_ipc import encode_ipc
from c4.bench.diagnose_scenarios import JOB_CLASSES, Scenario
from c4.catalogue import load
from c4.collector.store import PendingBatch, Store
from c4.collector.validate import validate_batch
from c4.config import AgentConfig
from c4.sim.jobs_twin import JobsTwin
from c4.sim.runner import SimRunner
from c4.sim.twin import ClusterTwin

EPOCH_S = 1_800_000_000.0
NIC_TRUTH = ("nic_degraded", "link_flap", "link_down", "comm_hang")


@dataclass
class ScenarioResult:
    """What C4D raised in one scenario, scored against its ground truth."""

    scenario: str
    kind: str
    negative: bool
    truth: dict[str, Any]
    raised: list[dict[str, Any]] = field(default_factory=list)  # fault_id, class, component, at_s (sim)
    correct: list[bool] = field(default_factory=list)
    ttd_s: float | None = None  # detection (first correct row) minus the true onset
    onset_errors_s: list[float] = field(default_factory=list)  # each correct fault's first_seen - true onset
    victims_blamed: int = 0  # raised faults naming a rank that only waited on the cause (jobs scenarios)
    slowdown_error: float | None = (
        None  # |estimated - true step slowdown| / true, of the first correct finding
    )
    sim_s: float = 0.0
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # what an ``on_end`` hook returned


def truth_of(sc: Scenario, twin) -> dict[str, Any]:
    """The ground truth the twin records for the scenario's fault (empty for a negative)."""
    if sc.negative:
        return {}
    t = twin.ground_truth()[0]
    if sc.faults[0].kind in NIC_TRUTH:  # the twin names NIC n; the fault table names its RDMA port
        f = sc.faults[0]
        t = {**t, "component": f"{f.node}/mlx5_{f.nic}p1"}
    if sc.jobs and sc.faults[0].kind == "slow_comm":  # local rank k sends on NIC k: its RDMA port
        f = sc.faults[0]
        t = {**t, "component": f"{f.node}/mlx5_{f.gpu}p1"}
    return t


def _rank_set(names: str) -> set[tuple[str, int]]:
    """``"<job>/rank<r>,..."`` as (job, rank) pairs."""
    return {(j, int(r)) for j, _, r in (v.partition("/rank") for v in names.split(",") if v)}


def is_correct(fault: dict[str, Any], truth: dict[str, Any], kind: str, twin=None) -> bool:
    """Whether a raised fault localizes the injected one (right component, and congestion told apart).

    In a jobs scenario a finding that names only cause ranks (a GPU, a rank, a host whose every rank
    of the job is a cause) localizes it too: both ends of a slow link are its cause. A job kind's
    finding must also have one of its classes (JOB_CLASSES): a data imbalance called a slow worker on
    the replica that drew the long batches is wrong.
    """
    if not truth:
        return False
    if kind in JOB_CLASSES and fault["fault_class"] not in JOB_CLASSES[kind]:
        return False
    if (
        "blamed" in truth
        and fault["fault_class"] != "congestion"
        and fault["component"] != truth["component"]
    ):
        named = {(j, r) for j, r in ranks_named(fault["component"], twin) if j == truth.get("job")}
        blamed = _rank_set(truth.get("blamed", ""))
        return bool(named) and named <= blamed
    if kind == "ecmp_congestion":
        return fault["fault_class"] == "congestion"
    if fault["fault_class"] == "congestion":
        return False
    return fault["component"] == truth["component"]


def ranks_named(component: str, twin) -> set[tuple[str, int]]:
    """The (job, rank) pairs a fault's component points at in a jobs twin: a GPU's rank, a host's ranks
    (a NIC, its CPU, the node), ``<job>/rank<r>``; none for a whole job or stage (not a rank's fault)."""
    if not isinstance(twin, JobsTwin):
        return set()
    if "->" in component:  # a link between two GPUs (or ranks): both ends
        return set().union(*(ranks_named(end, twin) for end in component.split("->")))
    head, _, tail = component.partition("/")
    if tail.startswith("rank") and tail[4:].isdigit():
        return {(head, int(tail[4:]))}
    if head not in twin.hosts:
        return set()
    if tail.startswith("gpu") and tail[3:].isdigit():
        return {twin.rank_at(head, int(tail[3:]))}
    return {twin.rank_at(head, g) for g in range(twin.gpus) if twin.job_name(head)}


def blames_victim(fault: dict[str, Any], truth: dict[str, Any], twin) -> bool:
    """Whether a raised fault blames only ranks that merely waited on the cause (never the cause itself)."""
    named = ranks_named(fault["component"], twin)
    if not named or not truth:
        return False
    victims, blamed = _rank_set(truth.get("affected", "")), _rank_set(truth.get("blamed", ""))
    return not (named & blamed) and bool(named & victims)


def slowdown_error(fault: dict[str, Any], truth: dict[str, Any]) -> float | None:
    """|estimated - true step slowdown| / true for a correct finding that estimates one (None otherwise)."""
    true = truth.get("slowdown_frac")
    est = fault.get("slowdown_frac")
    if true is None or est is None or true <= 0:
        return None
    return abs(est - true) / true


def make_twin(sc: Scenario):
    """The scenario's twin: 3D-parallel jobs (JobsTwin) or the single data-parallel job (ClusterTwin)."""
    if sc.jobs:
        return JobsTwin(
            nodes=sc.nodes,
            leaves=4,
            spines=4,
            seed=sc.seed,
            jobs=[dict(j) for j in sc.jobs],
            faults=list(sc.faults),
            horizon_s=sc.onset_s + sc.watch_s + 5.0,
            **sc.cluster,
        )
    return ClusterTwin(nodes=sc.nodes, leaves=4, spines=4, seed=sc.seed, faults=list(sc.faults), **sc.cluster)


def onset_error_s(first_seen: datetime | None, onset_s: float) -> float | None:
    """A fault's reported onset minus the true one, in simulated seconds (None if it reports none)."""
    if first_seen is None:
        return None
    return first_seen.replace(tzinfo=UTC).timestamp() - EPOCH_S - onset_s


def run_scenario(
    sc: Scenario,
    workdir: Path | None = None,
    diagnose_every_steps: int = 1,
    on_pass: Callable[[Store, Any, datetime, list[dict[str, Any]]], None] | None = None,
    on_end: Callable[[Store, Any, Any], dict[str, Any]] | None = None,
    flush_s: float = 0.0,
    delivery_lag_s: float | None = None,
) -> ScenarioResult:
    """Step the twin, sample every node with the real samplers, ingest through the Store, diagnose each step.

    ``flush_s`` > 0: each node's rows reach the store every that many simulated seconds, at a phase of
    its own (as agents with ``flush_interval_s`` deliver), so a diagnosis pass sees the nodes' latest
    seconds unevenly, as the collector does; C4D then looks ``delivery_lag_s`` behind (default: flush_s),
    as the collector's ``diagnose_delivery_lag_s`` makes it.

    ``on_pass(store, cursor, now, fault rows)`` runs after each diagnosis pass (e.g. to store what the
    collector stores); ``on_end(store, cursor, twin)``'s answer becomes the result's ``extra``.
    """

    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="c4-bench-diag-")) if own else Path(workdir)
    t_wall = time.perf_counter()
    try:
        twin = make_twin(sc)
        job_of = {h: twin.job_name(h) for h in twin.hosts} if sc.jobs else {}
        runner = SimRunner(work / "sim", twin, sc.name, epoch_s=EPOCH_S)
        catalogue = load()
        samplers = {}
        for host, w in runner.writers.items():
            cfg = AgentConfig(node=host, samplers=w.sampler_config(), spool_dir=work / "spool")
            samplers[host] = build_samplers(cfg, context_from(cfg, env={}))
            for s in samplers[host]:
                s.probe()
        store = Store(work / "c4.duckdb", catalogue)
        diag = DiagnosisRunner(
            catalogue,
            window_s=60.0,
            fabric=FabricModel(twin.connection_paths(), twin.switch_capacity_gbps()),
            delivery_lag_s=flush_s if delivery_lag_s is None else delivery_lag_s,
        )
        truth = truth_of(sc, twin)
        onset_s = float(truth.get("onset_s", sc.onset_s)) if truth else sc.onset_s
        result = ScenarioResult(sc.name, sc.kind, sc.negative, truth)
        seen: set[str] = set()
        seq = 0
        step = 0
        held: dict[str, list[tuple[str, dict]]] = {h: [] for h in samplers}  # rows not delivered yet
        hosts = sorted(samplers)
        next_flush = {h: twin.t + flush_s * i / len(hosts) for i, h in enumerate(hosts)}  # spread phases
        cur = store.cursor()
        while twin.t < sc.onset_s + sc.watch_s:
            runner.step()
            step += 1
            now = datetime.fromtimestamp(EPOCH_S + twin.t, UTC).replace(tzinfo=None)
            by_table: dict[str, list] = {}
            for host, ss in samplers.items():  # what every node's agent sampled this tick
                job = job_of.get(host, "")
                for s in ss:
                    for table, rs in s.sampler.sample(0).items():
                        held[host].extend((table, {"ts": now, "node": host, "job": job, **r}) for r in rs)
                if flush_s <= 0 or twin.t >= next_flush[host]:  # this node's agent flushes now
                    for table, r in held[host]:
                        by_table.setdefault(table, []).append(r)
                    held[host] = []
                    while flush_s > 0 and next_flush[host] <= twin.t:
                        next_flush[host] += flush_s
            batches = []
            for table, rs in by_table.items():  # one batch per table, through the collector's checks
                data = rows_to_table(catalogue, table, rs, {"ts": now, "job": ""})
                spec, checked = validate_batch(
                    catalogue, table, catalogue[table].version, encode_ipc(data), 256 << 20
                )
                seq += 1
                batches.append(PendingBatch("bench", seq, spec, checked))
            store.commit(batches)
            if step % diagnose_every_steps:
                continue
            rows = diag.run_once(cur, now).to_pylist()
            if on_pass is not None:
                on_pass(store, cur, now, rows)
            for r in rows:
                if r["state"] == "resolved" or r["fault_id"] in seen:
                    continue
                seen.add(r["fault_id"])
                ok = is_correct(r, truth, sc.kind, twin)
                result.raised.append(
                    {
                        "fault_id": r["fault_id"],
                        "class": r["fault_class"],
                        "component": r["component"],
                        "at_s": twin.t,
                        "onset_error_s": onset_error_s(r["first_seen"], onset_s),
                    }
                )
                result.correct.append(ok)
                if not ok and blames_victim(r, truth, twin):
                    result.victims_blamed += 1
                if ok and result.slowdown_error is None:
                    result.slowdown_error = slowdown_error(r, truth)
                if ok and result.raised[-1]["onset_error_s"] is not None:
                    result.onset_errors_s.append(result.raised[-1]["onset_error_s"])
                if ok and result.ttd_s is None:
                    result.ttd_s = max(0.0, twin.t - onset_s)
        if on_end is not None:
            result.extra = on_end(store, cur, twin)
        cur.close()
        store.close()
        result.sim_s = twin.t
        result.wall_s = time.perf_counter() - t_wall
        return result
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
