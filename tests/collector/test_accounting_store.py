"""Job accounting over a real store: rows a pass writes, the job_goodput and fault_cost views, skipped
passes when nothing changed, and the single-job twin's job_restart through the production samplers."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from testkit.twin import EPOCH_S, run_twin

from c4.analytics.account_jobs import JobAccounts
from c4.catalogue import Catalogue
from c4.collector.store import PendingBatch, Store
from c4.sim.faults.kind import Fault

T0 = datetime(2026, 1, 1, 12, 0, 0)


def at(s: float) -> datetime:
    """T0 + s seconds."""
    return T0 + timedelta(seconds=s)


def fill(spec, row: dict) -> dict:
    """``row`` with every other column of ``spec`` null."""
    return {c: row.get(c) for c in spec.arrow_schema.names}


def put(store: Store, table: str, rows: list[dict]) -> None:
    """Append rows to a table of the store."""
    spec = store.catalogue[table]
    store.commit([PendingBatch.internal(spec, [fill(spec, r) for r in rows])])


def coll_rows(job: str, comm: str, points: list[tuple[float, int]], nodes: int = 2) -> list[dict]:
    """nccl_collectives rows: every rank (8 per node) of one communicator at each (s, coll_sn)."""
    return [
        {
            "ts": at(t),
            "node": f"{job}-n{r // 8}",
            "job": job,
            "comm_id": comm,
            "rank": r,
            "n_ranks": 8 * nodes,
            "coll_sn": sn,
            "kind": "coll",
            "coll": "AllReduce",
            "hostname": f"{job}-n{r // 8}",
            "pid": 100 + r,
        }
        for t, sn in points
        for r in range(8 * nodes)
    ]


def fault_row(
    fault_id: str, node: str, first: float, last: float, state: str = "open", job: str = ""
) -> dict:
    """One faults row (the job '' ones belong to the job their node ran)."""
    return {
        "ts": at(last),
        "node": node,
        "job": job,
        "fault_id": fault_id,
        "detector": fault_id.split(":")[0],
        "fault_class": "hardware",
        "component_type": "gpu",
        "component": fault_id.split(":")[1],
        "first_seen": at(first),
        "last_seen": at(last),
        "state": state,
        "summary": "s",
    }


@pytest.fixture
def store(tmp_path):
    """A store with two jobs: 'train' slowed by a GPU fault then restarted by C4; 'eval' healthy."""
    s = Store(tmp_path / "c4.duckdb", Catalogue.from_dir())
    train = [(1.0 + i, i) for i in range(60)]  # 1 s iterations
    train += [(60.0 + 2 * k, 59 + k) for k in range(1, 11)]  # 10 of 2 s: 10 s slowed
    train_new = [(120.0 + i, i) for i in range(60)]  # new comm after C4's restart at 100
    put(s, "nccl_collectives", coll_rows("train", "a", train) + coll_rows("train", "b", train_new))
    put(s, "nccl_collectives", coll_rows("eval", "e", [(1.0 + i, i) for i in range(178)], nodes=1))
    put(
        s,
        "faults",
        [
            fault_row("gpu_throttle:train-n1/gpu3", "train-n1", 61.0, 80.0),
            fault_row("gpu_throttle:train-n1/gpu3", "train-n1", 61.0, 100.0, state="resolved"),
        ],
    )
    put(
        s,
        "actions",
        [
            {
                "ts": at(100),
                "node": "train-n1",
                "job": "train",
                "fault_id": "gpu_throttle:train-n1/gpu3",
                "sink": "restart",
                "outcome": "ran",
                "fault_state": "open",
                "target": "t",
                "attempts": 1,
            },
            {
                "ts": at(100),
                "node": "eval-n0",
                "job": "eval",
                "fault_id": "x:eval",
                "sink": "restart",
                "outcome": "dry_run",
                "fault_state": "open",
                "target": "t",
                "attempts": 1,
            },
        ],
    )
    yield s
    s.close()


def test_a_pass_writes_accounts_the_views_read(store):
    accounts = JobAccounts(window_s=3600, interval_s=0, checkpoint_interval_s=30)
    cur = store.cursor()
    rows = accounts.account(cur, now=at(180))
    assert {r["job"] for r in rows} == {"train", "eval"}
    put(store, "job_accounting", rows)
    goodput = {r["job"]: r for r in cur.execute("SELECT * FROM job_goodput").pl().to_dicts()}
    assert goodput["eval"]["ettr"] == 1.0 and goodput["eval"]["gpus"] == 8 and goodput["eval"]["lost_s"] == 0
    t = goodput["train"]
    assert t["gpus"] == 16 and t["runs"] == 2 and t["redone_unknown"] == 0
    assert t["slowed_s"] == pytest.approx(10.0)
    # last progress at 80, the restart command at 100: hung 20 s; restarting until the first record at 120
    assert t["hung_s"] == pytest.approx(20.0) and t["restarting_s"] == pytest.approx(20.0)
    # run 0 (1..80) checkpointed at 61; its work since (iterations of 2 s holding 1 s of work) takes 9.5 s again
    assert t["redone_s"] == pytest.approx(9.5)
    assert t["wall_s"] == pytest.approx(178.0) and t["unexplained_s"] == 0.0
    assert t["ettr"] == pytest.approx((178.0 - 59.5) / 178.0)
    (cost,) = cur.execute("SELECT * FROM fault_cost").pl().to_dicts()
    assert cost["fault_id"] == "gpu_throttle:train-n1/gpu3" and cost["job"] == "train"
    assert cost["gpu_hours_lost"] == pytest.approx(59.5 * 16 / 3600)
    # nothing changed: no new account; new records: the changed job alone, and current is the newest pass
    assert accounts.account(cur, now=at(181)) == []
    put(store, "nccl_collectives", coll_rows("eval", "e", [(179.0, 178)], nodes=1))
    again = accounts.account(cur, now=at(182))
    assert {r["job"] for r in again} == {"eval"} and {r["computed_at"] for r in again} == {at(182)}
    put(store, "job_accounting", again)
    current = cur.execute(
        "SELECT job, count(DISTINCT computed_at) FROM job_accounting_current GROUP BY 1"
    ).fetchall()
    assert dict(current) == {"train": 1, "eval": 1}
    cur.close()


def test_an_interval_holds_a_job_back(store):
    accounts = JobAccounts(window_s=3600, interval_s=60)
    cur = store.cursor()
    assert accounts.account(cur, now=at(180))
    put(store, "nccl_collectives", coll_rows("eval", "e", [(179.0, 178)], nodes=1))
    assert accounts.account(cur, now=at(200)) == []  # changed, but accounted 20 s ago
    assert {r["job"] for r in accounts.account(cur, now=at(241))} == {"eval"}
    cur.close()


def test_the_twins_job_restart_is_a_second_run_and_its_pause_is_lost(tmp_path):
    _, rows = run_twin(tmp_path, [Fault("job_restart", at_s=6)], steps=20)
    store = Store(tmp_path / "c4.duckdb", Catalogue.from_dir())
    put(store, "nccl_collectives", [{**r, "job": "train"} for r in rows["nccl_collectives"]])
    cur = store.cursor()
    end = max(r["ts"] for r in rows["nccl_collectives"])
    got = JobAccounts(window_s=3600, interval_s=0).account(cur, now=end)
    assert {r["run"] for r in got} == {0, 1}
    restarting = [r for r in got if r["kind"] == "restarting"]
    # the twin relaunches after a 5 s pause; nothing explains it (job_restart is no fault): unexplained
    assert len(restarting) == 1 and restarting[0]["category"] == "unexplained"
    assert restarting[0]["wall_s"] >= 5.0
    assert {r["gpus"] for r in got} == {32}  # 4 nodes x 8 GPUs
    assert got[0]["ts"] >= datetime.fromtimestamp(EPOCH_S).replace(tzinfo=None) - timedelta(days=1)
    cur.close()
    store.close()


def test_a_silent_job_is_hung_while_its_processes_hold_their_gpus_and_a_new_fault_reaccounts_it(tmp_path):
    s = Store(tmp_path / "c4.duckdb", Catalogue.from_dir())
    put(s, "nccl_collectives", coll_rows("llm", "c", [(1.0 + i, i) for i in range(30)], nodes=1))
    procs = [  # NVML's compute processes: the job's pids on its node, sampled every 10 s until 90 s
        {"ts": at(t), "node": "llm-n0", "gpu_index": r, "pid": 100 + r}
        for t in range(0, 91, 10)
        for r in range(8)
    ]
    put(s, "gpu_processes", procs)
    accounts = JobAccounts(window_s=3600, interval_s=0)
    cur = s.cursor()
    rows = accounts.account(cur, now=at(120))
    (hung,) = [r for r in rows if r["kind"] == "hung"]
    assert (hung["category"], hung["basis"], hung["ts"], hung["end_ts"]) == (
        "unexplained",
        "gpu_processes",
        at(31),
        at(90),
    )
    # silent jobs are accounted again each interval; a hang fault found later now explains it, up to now
    put(s, "faults", [fault_row("rank_hang:llm-n0/gpu1", "llm-n0", 35.0, 130.0, job="llm")])
    again = accounts.account(cur, now=at(130))
    (hung,) = [r for r in again if r["kind"] == "hung"]
    assert (hung["category"], hung["fault_id"], hung["end_ts"]) == ("hung", "rank_hang:llm-n0/gpu1", at(130))
    cur.close()
    s.close()


def test_a_job_with_no_communicator_of_every_rank_counts_all_its_gpus(tmp_path):
    """TP8 x PP4 on 4 nodes: four 8-rank TP communicators (one per node) and eight 4-rank PP ones, none of
    all 32 ranks. Its GPUs are the processes of its communicators together (32), not the largest one's 8."""
    s = Store(tmp_path / "c4.duckdb", Catalogue.from_dir())
    try:
        rows = []
        for t, sn in [(float(i), i) for i in range(1, 60)]:
            for node in range(4):
                for local in range(8):
                    base = {"ts": at(t), "node": f"n{node}", "job": "tp", "hostname": f"n{node}"}
                    base |= {"pid": 100 + local, "kind": "coll", "coll": "AllReduce", "coll_sn": sn}
                    rows.append(base | {"comm_id": f"tp{node}", "rank": local, "n_ranks": 8})
                    rows.append(base | {"comm_id": f"pp{local}", "rank": node, "n_ranks": 4})
        put(s, "nccl_collectives", rows)
        cur = s.cursor()
        put(s, "job_accounting", JobAccounts(window_s=3600, interval_s=0).account(cur, now=at(60)))
        (gpus,) = cur.execute("SELECT gpus FROM job_goodput WHERE job = 'tp'").fetchone()
        assert gpus == 32
        cur.close()
    finally:
        s.close()
