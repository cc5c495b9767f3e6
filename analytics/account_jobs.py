"""Job accounting over a store: each diagnosis pass, the job_accounting rows of every job whose records changed.

Reads a store cursor (as ``RecoveryWatch`` does), never the collector: per job the lowest rank of each
communicator over the accounting window (one SQL pass for all jobs), its GPUs per communicator, the
faults that may explain its lost time (their job's, or their node's when they name no job), C4's restart
commands that ran, and the lowest rank's step trace; then ``account_job``. A job whose collectives are
unchanged since its last account (count and newest ts per communicator), or that was accounted less
than ``interval_s`` ago, is skipped: a pass stays cheap, and the table grows by one account per job per
interval.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from c4.analytics.accounting import account_job
from c4.analytics.jobs import with_job

log = logging.getLogger("c4.analytics.account_jobs")

_COLLS = {
    "job": pl.String,
    "comm_id": pl.String,
    "ts": pl.Datetime("us"),
    "rank": pl.Int64,
    "coll_sn": pl.Int64,
}

#: The current state of every fault that was alive in the window (its job, or '' to be found by its node).
FAULTS_SQL = """
SELECT fault_id, arg_max(job, ts) AS job, arg_max(node, ts) AS node, arg_max(fault_class, ts) AS fault_class,
  arg_max(component, ts) AS component, min(first_seen) AS first_seen, max(last_seen) AS last_seen,
  CASE WHEN arg_max(state, ts) = 'resolved' THEN max(ts) END AS resolved_at
FROM faults GROUP BY fault_id HAVING max(coalesce(last_seen, ts)) >= ? AND min(first_seen) <= ?
"""
#: C4's job restarts that ran (dry runs and held steps restarted nothing).
RESTARTS_SQL = (
    "SELECT ts, fault_id, job FROM actions WHERE sink = 'restart' AND outcome = 'ran' AND ts >= ? AND ts <= ?"
)


@dataclass
class JobAccounts:
    """Accounts jobs from a store cursor, each when its data changed; remembers what it last accounted."""

    window_s: float = 6 * 3600.0
    interval_s: float = 60.0
    checkpoint_interval_s: float = 0.0
    max_skew_s: float = 300.0
    last: dict[str, tuple[tuple, datetime]] = field(default_factory=dict)  # job -> (fingerprint, computed_at)
    silent: set[str] = field(
        default_factory=set
    )  # jobs silent at their last account: re-accounted each interval
    skipped_by_reason: dict[str, int] = field(default_factory=dict)  # over all passes, reason -> count
    accounted: int = 0  # job accounts computed
    unchanged: int = 0  # job accounts skipped because nothing changed (or too soon)

    @property
    def records_skipped(self) -> int:
        """Records (and jobs without a period) left out of accounts, over all passes."""
        return sum(self.skipped_by_reason.values())

    def account(self, cur, now: datetime) -> list[dict[str, Any]]:
        """job_accounting rows of every job due for a new account at ``now``."""
        if self.last and all((now - at).total_seconds() < self.interval_s for _, at in self.last.values()):
            return []  # every job was accounted recently (a new job waits at most interval_s)
        start, end = now - timedelta(seconds=self.window_s), now + timedelta(seconds=self.max_skew_s)
        # a new or changed fault or restart command can explain any job's time anew
        causes = cur.execute(
            "SELECT (SELECT count(*) FROM faults), (SELECT max(ts) FROM faults), "
            "(SELECT count(*) FROM actions WHERE sink = 'restart')"
        ).fetchone()
        per_comm = cur.execute(
            "SELECT job, comm_id, count(*) AS n, max(ts) AS newest, count(DISTINCT rank) AS gpus, "
            "max(n_ranks) AS size, min(rank) AS low, "
            "list(DISTINCT hostname || '/' || CAST(pid AS VARCHAR)) FILTER (WHERE pid IS NOT NULL) AS procs "
            "FROM nccl_collectives WHERE ts >= ? AND ts <= ? "
            "GROUP BY job, comm_id",
            [start, end],
        ).pl()
        if per_comm.is_empty():
            return []
        comm_job = self._comm_jobs(cur, per_comm, start, end)
        per_comm = per_comm.with_columns(
            pl.col("comm_id")
            .replace_strict(comm_job, default=None)
            .fill_null(pl.col("job"))
            .alias("acct_job")
        )
        due: dict[str, tuple] = {}
        for (job,), g in per_comm.sort("comm_id").group_by(["acct_job"], maintain_order=True):
            key = (tuple(g.select("comm_id", "n", "newest").rows()), causes)
            prev = self.last.get(job)
            same = prev is not None and prev[0] == key and job not in self.silent
            if prev and (same or (now - prev[1]).total_seconds() < self.interval_s):
                self.unchanged += 1
                continue
            due[job] = key
        if not due:
            return []
        gpus = {
            c: max(int(n or 0), int(s or 0)) for c, n, s in per_comm.select("comm_id", "gpus", "size").rows()
        }
        procs = {c: set(p or []) for c, p in per_comm.select("comm_id", "procs").rows()}
        todo = per_comm.filter(pl.col("acct_job").is_in(list(due)))
        colls = self._lowest_ranks(cur, todo, start, end).with_columns(
            pl.col("comm_id").replace_strict(comm_job, default=None).fill_null(pl.col("job")).alias("job")
        )
        faults = cur.execute(FAULTS_SQL, [start, end]).pl()
        nameless = faults.height > 0 and bool((faults["job"].fill_null("") == "").any())
        nodes_of = self._nodes_of_jobs(cur, start, end) if nameless else {}
        restarts = cur.execute(RESTARTS_SQL, [start, end]).pl()
        steps = self._step_ops(cur, list(due), start, end)
        rows: list[dict[str, Any]] = []
        colls_of = colls.partition_by("job", as_dict=True)
        steps_of = steps.partition_by("job", as_dict=True) if steps.height else {}
        for job, key in due.items():
            job_faults = _faults_of(faults, job, nodes_of.get(job, set()))
            ids = set(job_faults["fault_id"].to_list())
            cmds = [(t, f) for t, f, j in restarts.rows() if j == job or f in ids]
            acc = account_job(
                job,
                colls_of.get((job,), colls.clear()),
                now,
                faults=job_faults,
                restarts=cmds,
                step_ops=steps_of.get((job,)),
                checkpoint_interval_s=self.checkpoint_interval_s,
                computed_at=now,
                comm_gpus=gpus,
                comm_procs=procs,
            )
            if acc.silent_since is not None:  # a hang, or the job's end: are its processes still on GPUs?
                comms = colls_of.get((job,), colls.clear())["comm_id"].unique().to_list()
                alive = self._alive_until(cur, comms, acc.silent_since - timedelta(seconds=60), end)
                if alive is not None:
                    acc = account_job(
                        job,
                        colls_of.get((job,), colls.clear()),
                        now,
                        faults=job_faults,
                        restarts=cmds,
                        step_ops=steps_of.get((job,)),
                        checkpoint_interval_s=self.checkpoint_interval_s,
                        computed_at=now,
                        comm_gpus=gpus,
                        comm_procs=procs,
                        alive_until=alive,
                    )
                self.silent.add(job)
            else:
                self.silent.discard(job)
            for reason, n in acc.skipped_by_reason.items():
                self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + n
            if acc.outcome != "ok":
                log.info("job accounting job=%s outcome=%s", job, acc.outcome)
            self.last[job] = (key, now)
            self.accounted += 1
            rows += acc.rows
        for job in set(self.last) - set(per_comm["acct_job"].to_list()):  # gone from the window
            del self.last[job]
            self.silent.discard(job)
        return rows

    @staticmethod
    def _alive_until(cur, comms: list[str], since: datetime, end: datetime) -> datetime | None:
        """The newest NVML sample showing a process of these communicators (their Inspector pids on their
        nodes) on a GPU since ``since``, or None (no such sample: the processes are gone, or their pids are
        in another namespace than NVML's)."""
        (alive,) = cur.execute(
            "SELECT max(g.ts) FROM gpu_processes g SEMI JOIN (SELECT DISTINCT node, pid FROM nccl_collectives "
            "WHERE ts >= ? AND ts <= ? AND list_contains(?, comm_id) AND pid IS NOT NULL) p "
            "ON g.node = p.node AND g.pid = p.pid WHERE g.ts >= ? AND g.ts <= ?",
            [since, end, comms, since, end],
        ).fetchone()
        return alive

    @staticmethod
    def _comm_jobs(cur, per_comm: pl.DataFrame, start: datetime, end: datetime) -> dict[str, str]:
        """comm_id -> job for communicators whose rows carry no job label (the job their processes form)."""
        if not (per_comm["job"] == "").any():
            return {}
        procs = cur.execute(
            "SELECT DISTINCT job, comm_id, hostname, pid, 0 AS rank FROM nccl_collectives WHERE ts >= ? AND ts <= ?",
            [start, end],
        ).pl()
        named = with_job(procs).filter(
            pl.col("comm_id").is_in(per_comm.filter(pl.col("job") == "")["comm_id"].implode())
        )
        return dict(named.select("comm_id", "job").unique("comm_id").rows())

    @staticmethod
    def _lowest_ranks(cur, todo: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
        """The lowest rank's records of each (job label, communicator) in ``todo``."""
        pairs = todo.select("job", "comm_id", "low").unique()
        cur.register("c4_acct_pairs", pairs.to_arrow())
        try:
            return (
                cur.execute(
                    "SELECT c.job, c.comm_id, c.ts, c.rank, c.coll_sn FROM nccl_collectives c "
                    "SEMI JOIN c4_acct_pairs p ON c.job = p.job AND c.comm_id = p.comm_id AND c.rank = p.low "
                    "WHERE c.ts >= ? AND c.ts <= ?",
                    [start, end],
                )
                .pl()
                .cast(_COLLS)
            )
        finally:
            cur.unregister("c4_acct_pairs")

    @staticmethod
    def _nodes_of_jobs(cur, start: datetime, end: datetime) -> dict[str, set[str]]:
        """The nodes each job ran on in the window (from its collectives' agents; unlabelled rows excluded)."""
        rows = cur.execute(
            "SELECT DISTINCT job, node FROM nccl_collectives WHERE ts >= ? AND ts <= ? AND job <> ''",
            [start, end],
        ).fetchall()
        rows += cur.execute(
            "SELECT DISTINCT job, node FROM nodes WHERE ts >= ? AND ts <= ? AND job <> ''", [start, end]
        ).fetchall()
        out: dict[str, set[str]] = {}
        for job, node in rows:
            out.setdefault(job, set()).add(node)
        return out

    @staticmethod
    def _step_ops(cur, jobs: list[str], start: datetime, end: datetime) -> pl.DataFrame:
        """The lowest rank's step trace of each job: ts, step, op and the op's end."""
        return cur.execute(
            "SELECT job, ts, step, op, ts + to_microseconds(CAST(coalesce(duration_s, 0) * 1e6 AS BIGINT)) AS end "
            "FROM step_ops WHERE ts >= ? AND ts <= ? AND list_contains(?, job) "
            "QUALIFY rank = min(rank) OVER (PARTITION BY job)",
            [start, end, jobs],
        ).pl()


def _faults_of(faults: pl.DataFrame, job: str, nodes: set[str]) -> pl.DataFrame:
    """The faults of ``job``: its own, and those naming no job on a node it ran on."""
    if faults.is_empty():
        return faults
    return faults.filter(
        (pl.col("job") == job) | ((pl.col("job").fill_null("") == "") & pl.col("node").is_in(list(nodes)))
    )
