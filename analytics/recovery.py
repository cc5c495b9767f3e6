"""Recovery stages seen in telemetry: a fault's job restarted (sequence numbers began again) and recovered
(back at its normal iteration period).

Pure part: ``restart_ts`` and ``recovered_ts`` over one job's collectives. ``RecoveryWatch`` feeds them from
a store cursor for the faults of the last hour and returns ``fault_observations`` rows, each stage once per
fault (the stages already stored are loaded at start).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import polars as pl

from c4.analytics.periods import job_periods

log = logging.getLogger("c4.analytics.recovery")

#: A communicator first seen after the onset whose first sequence number is at most this started anew.
NEW_COMM_MAX_FIRST_SN = 2
#: Consecutive iterations at the normal period that make a job "recovered".
RECOVERED_ITERATIONS = 3
#: An iteration at most this many times the normal period counts as normal.
NORMAL_PERIOD_TOLERANCE = 1.5
#: Faults detected longer ago than this are no longer watched, in seconds.
WATCH_S = 3600.0
#: A restart or slowdown this long after a fault resolved is not its doing, in seconds (a restart that ends
#: a fault's signal comes before its resolution, which waits for three signal-free passes; the grace
#: covers agents' clocks a little ahead of the collector's).
RESOLVED_GRACE_S = 10.0

_COLLS = {"ts": pl.Datetime("us"), "comm_id": pl.String, "rank": pl.Int64, "coll_sn": pl.Int64}


def _lowest_rank(colls: pl.DataFrame) -> pl.DataFrame:
    """Each communicator's lowest rank's records, by time (one series per communicator)."""
    return colls.filter(pl.col("rank") == pl.col("rank").min().over("comm_id")).sort("ts")


def restart_ts(colls: pl.DataFrame, after: datetime) -> tuple[datetime, str] | None:
    """When the job's collectives began again after ``after``: a sequence number lower than the one before it
    on the same communicator, or a communicator first seen after ``after`` starting at a low number.

    ``colls``: one job's records (ts, comm_id, rank, coll_sn). Returns (ts, what showed it) or None.
    """
    if colls.is_empty():
        return None
    s = _lowest_rank(colls).with_columns(pl.col("coll_sn").shift(1).over("comm_id").alias("prev_sn"))
    drops = s.filter((pl.col("ts") > after) & (pl.col("coll_sn") < pl.col("prev_sn")))
    firsts = s.group_by("comm_id").agg(pl.col("ts").min().alias("ts"), pl.col("coll_sn").first())
    older = firsts.filter(pl.col("ts") <= after).height > 0  # the job ran before: a new comm is a restart
    fresh = firsts.filter((pl.col("ts") > after) & (pl.col("coll_sn") <= NEW_COMM_MAX_FIRST_SN))
    found = []
    if drops.height:
        r = drops.row(0, named=True)
        found.append((r["ts"], f"comm {r['comm_id']}: coll_sn {r['prev_sn']} -> {r['coll_sn']}"))
    if older and fresh.height:
        r = fresh.sort("ts").row(0, named=True)
        found.append((r["ts"], f"new comm {r['comm_id']} from coll_sn {r['coll_sn']}"))
    return min(found, key=lambda f: f[0]) if found else None


def normal_period_s(colls: pl.DataFrame, before: datetime) -> float | None:
    """The job's iteration period from its records before ``before`` (None with too few)."""
    periods = job_periods(colls.filter(pl.col("ts") < before).with_columns(job=pl.lit("")))
    return periods.get("")


def disrupted_ts(colls: pl.DataFrame, after: datetime, period_s: float) -> datetime | None:
    """The first record after ``after`` that ends an iteration longer than NORMAL_PERIOD_TOLERANCE x
    ``period_s`` on any communicator (the job slowed or stalled), or None."""
    s = _lowest_rank(colls).with_columns(
        (pl.col("ts").diff().over("comm_id").dt.total_microseconds() / 1e6).alias("gap_s")
    )
    slow = s.filter((pl.col("ts") > after) & (pl.col("gap_s") > NORMAL_PERIOD_TOLERANCE * period_s))
    return slow["ts"].min() if slow.height else None


def recovered_ts(colls: pl.DataFrame, after: datetime, period_s: float) -> tuple[datetime, float] | None:
    """The end of the first run of RECOVERED_ITERATIONS iterations after ``after`` each at most
    NORMAL_PERIOD_TOLERANCE x ``period_s`` long (on the job's slowest communicator after ``after``).

    Returns (ts, the median iteration period of that run) or None.
    """
    later = _lowest_rank(colls.filter(pl.col("ts") >= after))
    if later.is_empty():
        return None
    gaps = later.with_columns(
        (pl.col("ts").diff().over("comm_id").dt.total_microseconds() / 1e6).alias("gap_s")
    ).drop_nulls("gap_s")
    if gaps.is_empty():
        return None
    pace = (
        gaps.group_by("comm_id").agg(pl.col("gap_s").median().alias("m")).sort("m", descending=True).row(0)[0]
    )
    run: list[float] = []
    for ts, gap in gaps.filter(pl.col("comm_id") == pace).select("ts", "gap_s").iter_rows():
        run = [*run, gap] if 0 < gap <= NORMAL_PERIOD_TOLERANCE * period_s else []
        if len(run) >= RECOVERED_ITERATIONS:
            return ts, sorted(run)[len(run) // 2]
    return None


@dataclass
class RecoveryWatch:
    """Watches recent faults' jobs for a restart and a return to the normal period; each stage once."""

    watch_s: float = WATCH_S
    seen: set[tuple[str, str]] = field(default_factory=set)  # (fault_id, stage) already stored
    baseline_s: dict[str, float] = field(default_factory=dict)  # fault_id -> the job's period before onset

    def load(self, cur) -> None:
        """The stages already stored (a restarted collector does not record them again)."""
        rows = cur.execute("SELECT fault_id, stage, period_s FROM fault_observations").fetchall()
        for fault_id, stage, period_s in rows:
            self.seen.add((fault_id, stage))
            if stage == "restarted" and period_s:
                self.baseline_s[fault_id] = period_s

    def observe(self, cur, lookback_s: float, max_skew_s: float, now: datetime | None = None) -> list[dict]:
        """fault_observations rows for stages reached since the last call (``lookback_s``: how far before a
        fault's onset its job's normal period is learned)."""
        now = now or datetime.now(UTC).replace(tzinfo=None)
        faults = cur.execute(
            "SELECT f.fault_id, f.node, f.onset, f.resolved, coalesce(nullif(f.job, ''), "
            "(SELECT arg_max(n.job, n.ts) FROM nodes n WHERE n.node = f.node AND n.job <> ''), '') "
            "FROM (SELECT fault_id, arg_max(node, ts) AS node, arg_max(job, ts) AS job, "
            "min(first_seen) AS onset, min(ts) AS detected, CASE WHEN arg_max(state, ts) = 'resolved' "
            "THEN max(ts) END AS resolved FROM faults GROUP BY fault_id) f "
            "WHERE f.detected >= ?",
            [now - timedelta(seconds=self.watch_s)],
        ).fetchall()
        todo: dict[str, list] = {}  # job -> its faults still to watch
        for fault_id, node, onset, resolved, job in faults:
            if job and (fault_id, "recovered") not in self.seen:
                todo.setdefault(job, []).append((fault_id, node, onset, resolved))
        rows = []
        for job, watched in todo.items():  # one read per job, however many of its faults are watched
            since = min(onset for _, _, onset, _ in watched) - timedelta(seconds=lookback_s)
            colls = (
                cur.execute(
                    "SELECT ts, comm_id, rank, coll_sn FROM nccl_collectives WHERE job = ? AND ts >= ? AND ts <= ?",
                    [job, since, now + timedelta(seconds=max_skew_s)],
                )
                .pl()
                .cast(_COLLS)
            )
            for fault_id, node, onset, resolved in watched:
                mine = colls.filter(pl.col("ts") >= onset - timedelta(seconds=lookback_s))
                rows += self._stages(fault_id, node, job, onset, resolved, mine)
        return rows

    def _stages(self, fault_id, node, job, onset, resolved, colls: pl.DataFrame) -> list[dict]:
        """The new stages of one fault from its job's records (``resolved``: when it resolved, or None)."""
        # a restart or slowdown long after the fault resolved is another story
        during = colls
        if resolved is not None:
            during = colls.filter(pl.col("ts") <= resolved + timedelta(seconds=RESOLVED_GRACE_S))
        if fault_id not in self.baseline_s:
            period = normal_period_s(colls, onset)
            if period:
                self.baseline_s[fault_id] = period
        baseline = self.baseline_s.get(fault_id)
        out = []
        restarted = restart_ts(during, onset)
        if restarted and (fault_id, "restarted") not in self.seen:
            out.append(self._row(fault_id, node, job, "restarted", restarted[0], baseline, restarted[1]))
        # recovered: back at the normal period after a restart, or after the job slowed or stalled
        after = restarted[0] if restarted else (baseline and disrupted_ts(during, onset, baseline))
        if baseline and after:
            back = recovered_ts(colls, after, baseline)
            if back and (fault_id, "recovered") not in self.seen:
                detail = f"{RECOVERED_ITERATIONS} iterations of {back[1]:.3f} s (normal {baseline:.3f} s)"
                out.append(self._row(fault_id, node, job, "recovered", back[0], back[1], detail))
        for r in out:
            self.seen.add((fault_id, r["stage"]))
            log.info("recovery fault_id=%s job=%s stage=%s at=%s", fault_id, job, r["stage"], r["ts"])
        return out

    @staticmethod
    def _row(fault_id, node, job, stage, ts, period_s, detail) -> dict:
        return {
            "ts": ts,
            "node": node or "",
            "job": job,
            "fault_id": fault_id,
            "stage": stage,
            "period_s": period_s,
            "detail": detail,
        }
