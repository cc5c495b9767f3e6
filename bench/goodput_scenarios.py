"""Goodput scenarios (issue 19): jobs that checkpoint, hang, slow down and restart, for scoring the measured
job accounting against the twin's ``JobsTwin.accounting_truth``.

Each is a ``Scenario`` of the diagnosis library's kind (``run_scenario`` runs it): two 3D-parallel jobs on
eight nodes that checkpoint every ``CHECKPOINT_EVERY_STEPS`` steps, over ``horizon_s`` simulated seconds.
Their ``kind`` is the diagnosis kind of their first fault (``job_hang``, ``job_slow_worker``) or
``job_healthy`` when C4D must raise nothing (a planned restart is no fault); the truth to score the
account against is ``make_twin(sc).accounting_truth(until_s)`` after the run.
"""

from __future__ import annotations

from c4.bench.diagnose_scenarios import Scenario
from c4.sim.twin import Fault

__all__ = ["CHECKPOINT_EVERY_STEPS", "GOODPUT_NODES", "goodput_jobs", "goodput_scenarios"]

#: Steps between two checkpoints (a step is about 1.4 s for train-a, 1.6 s for train-b: ~30 s apart).
CHECKPOINT_EVERY_STEPS = 20
#: Nodes of every goodput scenario (train-a on host0-3, train-b on host4-7).
GOODPUT_NODES = 8


def goodput_jobs(restart_after_s: float | None = 30.0, restart_s: float = 30.0) -> list[dict]:
    """The two jobs: TP 8 x PP 2 x DP 2 on host0-3 and TP 8 x PP 4 on host4-7, both checkpointing; a hung
    run is killed ``restart_after_s`` after its last op (None: never) and relaunched ``restart_s`` later."""
    common = {
        "microbatches": 8,
        "checkpoint_every_steps": CHECKPOINT_EVERY_STEPS,
        "restart_after_s": restart_after_s,
        "restart_s": restart_s,
    }
    return [
        {"name": "train-a", "tp": 8, "pp": 2, "dp": 2, "first_node": 0, **common},
        {"name": "train-b", "tp": 8, "pp": 4, "dp": 1, "first_node": 4, **common},
    ]


def goodput_scenarios(seed: int = 0, horizon_s: float = 240.0) -> list[Scenario]:
    """The goodput library: a hang killed and relaunched, a hang left alone, a slow worker then an operator's
    restart, a planned restart of a healthy job, and two healthy jobs (each watched for ``horizon_s``)."""

    def sc(name: str, kind: str, faults: list[Fault], onset_s: float = 0.0, **jobs_kw) -> Scenario:
        return Scenario(
            f"goodput-{name}-{seed}",
            kind,
            seed,
            GOODPUT_NODES,
            faults=faults,
            onset_s=onset_s,
            watch_s=horizon_s - onset_s,
            jobs=goodput_jobs(**jobs_kw),
        )

    hang = 0.25 * horizon_s
    slow, restart = 0.15 * horizon_s, 0.5 * horizon_s
    return [
        sc("hang-restart", "job_hang", [Fault("rank_hang", hang, node="host1", gpu=3)], onset_s=hang),
        sc(
            "hang-unattended",
            "job_hang",
            [Fault("rank_hang", hang, node="host5", gpu=6)],
            onset_s=hang,
            restart_after_s=None,
        ),
        sc(
            "slow-restart",
            "job_slow_worker",
            [
                Fault("slow_worker", slow, node="host6", gpu=2, factor=1.8),
                Fault("job_restart", restart, job="train-b"),
            ],
            onset_s=slow,
        ),
        sc(
            "planned-restart",
            "job_healthy",
            [Fault("job_restart", 0.4 * horizon_s, job="train-a")],
            restart_s=20.0,
        ),
        sc("healthy", "job_healthy", []),
    ]
