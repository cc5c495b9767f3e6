"""Goodput: each job's ETTR over time, lost GPU-hours by cause, the costliest faults and the recovery timeline.

Every panel reads the current account (job_accounting_current) clipped to a look-back window that ends at the
newest accounted instant: an interval straddling the window's start counts only its part inside, its lost time
and GPU-hours in proportion (a slowed interval loses time evenly over its length). With a window covering the
whole account the numbers are the job_goodput and fault_cost views' own.
"""

from __future__ import annotations

from c4.ui.sql import LATEST_FAULTS, bucket_s, lit

#: The categories of lost time, in the order the page stacks them (productive loses nothing).
LOST_CATEGORIES = ("hung", "slowed", "restarting", "redone", "unexplained")
#: Recovery stages counted for the distribution, with the fault_recovery column giving each one's time after onset.
RECOVERY_STAGES = {
    "detected": "time_to_detect_s",
    "alerted": "time_to_alert_s",
    "isolated": "time_to_isolate_s",
    "restarted": "time_to_restart_s",
    "recovered": "time_to_recover_s",
}
#: Buckets the ETTR series aims at over the window.
ETTR_POINTS = 60

#: The newest accounted instant (the end of the window).
ACCOUNT_END = "(SELECT max(end_ts) FROM job_accounting_current)"


def _job_filter(job: str | None, col: str = "job") -> str:
    return f"{col} = {lit(job)}" if job else "true"


def window_start(window_s: float) -> str:
    """Scalar: the window's start, ``window_s`` before the newest accounted instant."""
    return f"({ACCOUNT_END} - to_microseconds({int(window_s * 1e6)}))"


def clipped(window_s: float, job: str | None = None) -> str:
    """job_accounting_current rows overlapping the window, clipped to it: ts/end_ts, wall_s, lost_s and
    gpu_hours_lost scaled by the share of the interval inside the window (a zero-length interval counts whole)."""
    w0 = window_start(window_s)
    return f"""
SELECT job, category, fault_id, fault_class, component, gpus, run, ts0 AS ts, ts1 AS end_ts,
       greatest(date_diff('microsecond', ts0, ts1), 0) / 1e6 AS wall_s,
       lost_s * share AS lost_s, gpu_hours_lost * share AS gpu_hours_lost
FROM (
  SELECT *, greatest(ts, {w0}) AS ts0, least(end_ts, {ACCOUNT_END}) AS ts1,
         CASE WHEN wall_s > 0
              THEN greatest(date_diff('microsecond', greatest(ts, {w0}), least(end_ts, {ACCOUNT_END})), 0) / 1e6 / wall_s
              ELSE 1.0 END AS share
  FROM job_accounting_current
  WHERE end_ts >= {w0} AND {_job_filter(job)}
)
"""


def jobs() -> str:
    """Every accounted job (job_goodput): its accounted range, ETTR and GPU-hours lost, worst ETTR first."""
    return """
SELECT job, start, end_ts, round(wall_s, 1) AS wall_s, round(productive_s, 1) AS productive_s,
       round(lost_s, 1) AS lost_s, ettr, round(gpu_hours_lost, 3) AS gpu_hours_lost
FROM job_goodput ORDER BY ettr NULLS LAST, job
"""


def totals(window_s: float, job: str | None = None) -> str:
    """One row over the window: wall, productive and lost seconds, ETTR, GPU-hours lost, jobs and GPUs."""
    return f"""
SELECT count(DISTINCT job) AS jobs, sum(wall_s) AS wall_s, sum(wall_s - lost_s) AS productive_s,
       sum(lost_s) AS lost_s, sum(wall_s - lost_s) / nullif(sum(wall_s), 0) AS ettr,
       coalesce(sum(gpu_hours_lost), 0) AS gpu_hours_lost, min(ts) AS start, max(end_ts) AS end_ts
FROM ({clipped(window_s, job)})
"""


def ettr_bucket_s(window_s: float) -> int:
    """The ETTR series' bucket width for a window (about ETTR_POINTS buckets)."""
    return bucket_s(window_s, ETTR_POINTS)


def ettr_series(window_s: float, job: str | None = None) -> str:
    """Per job and time bucket: wall and productive seconds inside the bucket and ETTR = productive / wall.

    An interval spreads over every bucket it overlaps (its lost time in proportion to the overlap)."""
    bs = ettr_bucket_s(window_s)
    step = f"INTERVAL {bs} SECOND"
    return f"""
WITH c AS ({clipped(window_s, job)}),
spread AS (
  SELECT job, wall_s, lost_s, ts, end_ts,
         unnest(range(time_bucket({step}, ts), greatest(end_ts, ts + INTERVAL 1 MICROSECOND), {step})) AS t
  FROM c
),
part AS (
  SELECT job, t,
         greatest(date_diff('microsecond', greatest(ts, t), least(end_ts, t + {step})), 0) / 1e6 AS in_s,
         CASE WHEN wall_s > 0 THEN lost_s / wall_s ELSE 0 END AS lost_frac
  FROM spread
)
SELECT t, job, sum(in_s) AS wall_s, sum(in_s * (1 - lost_frac)) AS productive_s,
       sum(in_s * (1 - lost_frac)) / nullif(sum(in_s), 0) AS ettr
FROM part GROUP BY t, job HAVING sum(in_s) > 0 ORDER BY job, t
"""


def lost_by_category(window_s: float, job: str | None = None) -> str:
    """Lost seconds and GPU-hours in the window by category (every lost category, zeros included)."""
    cats = ", ".join(f"({lit(c)}, {k})" for k, c in enumerate(LOST_CATEGORIES))
    return f"""
WITH c AS ({clipped(window_s, job)}),
cats(category, pos) AS (VALUES {cats})
SELECT cats.category, coalesce(sum(c.lost_s), 0) AS lost_s, coalesce(sum(c.gpu_hours_lost), 0) AS gpu_hours_lost
FROM cats LEFT JOIN c ON c.category = cats.category
GROUP BY cats.category, cats.pos ORDER BY cats.pos
"""


def lost_by_cause(window_s: float, job: str | None = None) -> str:
    """Lost GPU-hours in the window by fault class, component and category (no fault: class 'unexplained')."""
    return f"""
SELECT coalesce(nullif(fault_class, ''), 'unexplained') AS fault_class,
       coalesce(nullif(component, ''), '(no fault)') AS component, category,
       sum(lost_s) AS lost_s, sum(gpu_hours_lost) AS gpu_hours_lost
FROM ({clipped(window_s, job)})
WHERE category <> 'productive' AND lost_s > 0
GROUP BY ALL ORDER BY gpu_hours_lost DESC, fault_class, component, category
"""


def worst_faults(window_s: float, job: str | None = None, limit: int = 20) -> str:
    """The faults that cost most GPU-hours in the window (fault_cost's columns), with their state and summary."""
    return f"""
WITH cost AS (
  SELECT fault_id, any_value(job) AS job, any_value(fault_class) AS fault_class, any_value(component) AS component,
         sum(lost_s) AS lost_s, sum(gpu_hours_lost) AS gpu_hours_lost,
         coalesce(sum(lost_s) FILTER (WHERE category = 'hung'), 0) AS hung_s,
         coalesce(sum(lost_s) FILTER (WHERE category = 'slowed'), 0) AS slowed_s,
         coalesce(sum(lost_s) FILTER (WHERE category = 'restarting'), 0) AS restarting_s,
         coalesce(sum(lost_s) FILTER (WHERE category = 'redone'), 0) AS redone_s
  FROM ({clipped(window_s, job)}) WHERE fault_id <> '' GROUP BY fault_id
)
SELECT cost.fault_id, cost.job, cost.fault_class, cost.component, cost.gpu_hours_lost, cost.lost_s,
       cost.hung_s, cost.slowed_s, cost.restarting_s, cost.redone_s,
       f.state, f.detector, f.first_seen, f.summary
FROM cost LEFT JOIN ({LATEST_FAULTS}) f USING (fault_id)
WHERE cost.lost_s > 0
ORDER BY cost.gpu_hours_lost DESC, cost.lost_s DESC, cost.fault_id LIMIT {int(limit)}
"""


def _recovery_faults(window_s: float, job: str | None) -> str:
    """fault_recovery rows of faults with onset in the window ending at the newest fault row (and of the job:
    its faults, or faults its account blames)."""
    where = f"onset >= (SELECT max(ts) FROM faults) - to_microseconds({int(window_s * 1e6)})"
    if job:
        where += (
            f" AND (job = {lit(job)} OR fault_id IN "
            f"(SELECT fault_id FROM job_accounting_current WHERE job = {lit(job)} AND fault_id <> ''))"
        )
    return f"SELECT * FROM fault_recovery WHERE {where}"


def recovery_times(window_s: float, job: str | None = None) -> str:
    """Long form for the distribution: one row per fault and stage reached, seconds after onset."""
    parts = " UNION ALL ".join(
        f"SELECT fault_id, {lit(stage)} AS stage, {k} AS pos, {col} AS seconds FROM r WHERE {col} IS NOT NULL"
        for k, (stage, col) in enumerate(RECOVERY_STAGES.items())
    )
    return f"WITH r AS ({_recovery_faults(window_s, job)})\n{parts}\nORDER BY pos, seconds, fault_id"


def recovery_counts(window_s: float, job: str | None = None) -> str:
    """How many faults (onset in the window) reached each stage, with median and max seconds after onset;
    the dry runs of isolation and restart beside them (fault_timeline), which count as neither."""
    cols = ", ".join(
        f"count({col}) AS {stage}, median({col}) AS {stage}_median_s, max({col}) AS {stage}_max_s"
        for stage, col in RECOVERY_STAGES.items()
    )
    return f"""
WITH r AS ({_recovery_faults(window_s, job)})
SELECT count(*) AS faults, {cols},
       (SELECT count(DISTINCT fault_id) FROM fault_timeline
        WHERE stage = 'isolated_dry_run' AND fault_id IN (SELECT fault_id FROM r)) AS isolated_dry_run,
       (SELECT count(DISTINCT fault_id) FROM fault_timeline
        WHERE stage = 'restarted_dry_run' AND fault_id IN (SELECT fault_id FROM r)) AS restarted_dry_run
FROM r
"""
