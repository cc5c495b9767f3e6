"""Jobs: each job's step time (actual vs ideal, per step), what costs it (worker, stage, op) and its causes and victims."""

from __future__ import annotations

from c4.ui.sql import LATEST_FAULTS, lit

#: The newest diagnosis pass's step_attribution rows of each job.
LATEST_ATTRIBUTION = """
SELECT * FROM step_attribution
QUALIFY ts = max(ts) OVER (PARTITION BY job)
"""


def jobs(window_s: float) -> str:
    """Every job with step_ops in the window or a stored attribution, with its newest actual vs ideal step time."""
    return f"""
WITH ops AS (
  SELECT job, count(DISTINCT rank) AS ranks, count(DISTINCT pp_stage) AS stages,
         count(DISTINCT dp_rank) AS dp, count(DISTINCT tp_rank) AS tp, max(step) AS newest_step, max(ts) AS newest_op
  FROM step_ops WHERE ts >= (SELECT max(ts) FROM step_ops) - INTERVAL {int(window_s)} SECOND
  GROUP BY job
), att AS (
  SELECT job, ts AS attributed, steps, actual_step_s, ideal_step_s, slowdown_frac
  FROM ({LATEST_ATTRIBUTION}) WHERE scope = 'job'
), causes AS (
  SELECT job, count(*) AS open_causes FROM ({LATEST_FAULTS})
  WHERE state <> 'resolved' AND coalesce(job, '') <> '' GROUP BY job
)
SELECT coalesce(ops.job, att.job) AS job, ranks, stages, dp, tp, newest_step, newest_op, steps,
       round(actual_step_s, 4) AS actual_step_s, round(ideal_step_s, 4) AS ideal_step_s,
       round(slowdown_frac, 3) AS slowdown_frac, coalesce(open_causes, 0) AS open_causes, attributed
FROM ops FULL JOIN att ON att.job = ops.job LEFT JOIN causes ON causes.job = coalesce(ops.job, att.job)
ORDER BY slowdown_frac DESC NULLS LAST, job
"""


def breakdown(job: str, scope: str) -> str:
    """The newest attribution of one job for one scope (worker, stage or op), costliest first."""
    return f"""
SELECT part, rank, dp_rank, pp_stage, tp_rank, op, round(cost_s, 5) AS cost_s, round(share, 3) AS share
FROM ({LATEST_ATTRIBUTION}) WHERE job = {lit(job)} AND scope = {lit(scope)}
ORDER BY cost_s DESC NULLS LAST, part
"""


def step_times(job: str, window_s: float) -> str:
    """Each step's actual time in the window: from the previous step's last op end to its own (the first: its span).

    The newest step is left out: it may still be running."""
    return f"""
SELECT step, started, round(coalesce(ended - lag(ended) OVER (ORDER BY step), ended - first_start), 4) AS step_s, ranks
FROM (
  SELECT step, min(ts) AS started, min(start_s) AS first_start, max(start_s + duration_s) AS ended,
         count(DISTINCT rank) AS ranks
  FROM step_ops
  WHERE job = {lit(job)}
    AND ts >= (SELECT max(ts) FROM step_ops WHERE job = {lit(job)}) - INTERVAL {int(window_s)} SECOND
  GROUP BY step
)
QUALIFY step < max(step) OVER ()
ORDER BY step
"""


def findings(job: str) -> str:
    """The job's causes not yet resolved: class, component, what each costs and who only waited on it."""
    return f"""
SELECT fault_class, component, round(slowdown_frac, 3) AS slowdown_frac, affected, action, detector, state,
       communicator, summary, first_seen, last_seen
FROM ({LATEST_FAULTS}) WHERE job = {lit(job)} AND state <> 'resolved'
ORDER BY slowdown_frac DESC NULLS LAST, confidence DESC, component
"""


def roles(job: str, window_s: float) -> str:
    """Every rank of the job with its place (stage, dp, tp) and role: cause (blamed by an open finding),
    victim (only waited on one: in a finding's affected), or ok."""
    return f"""
WITH ranks AS (
  SELECT rank, any_value(dp_rank) AS dp_rank, any_value(pp_stage) AS pp_stage, any_value(tp_rank) AS tp_rank,
         max(host) AS host, max(local_rank) AS local_rank
  FROM step_ops
  WHERE job = {lit(job)} AND ts >= (SELECT max(ts) FROM step_ops WHERE job = {lit(job)}) - INTERVAL {int(window_s)} SECOND
  GROUP BY rank
), f AS (
  SELECT component, fault_class, string_split(coalesce(affected, ''), ',') AS victims
  FROM ({LATEST_FAULTS}) WHERE job = {lit(job)} AND state <> 'resolved'
), r AS (
  SELECT ranks.*, {lit(job)} || '/rank' || rank AS rank_name,
         CASE WHEN host <> '' AND local_rank IS NOT NULL THEN host || '/gpu' || local_rank END AS gpu
  FROM ranks
)
SELECT r.rank, r.dp_rank, r.pp_stage, r.tp_rank, r.rank_name,
       'dp' || r.dp_rank || '/tp' || r.tp_rank AS replica,
       CASE WHEN bool_or(f.component IN (r.rank_name, r.gpu)) THEN 'cause'
            WHEN bool_or(list_contains(f.victims, r.rank_name)) THEN 'victim' ELSE 'ok' END AS role,
       string_agg(DISTINCT CASE WHEN f.component IN (r.rank_name, r.gpu) THEN f.fault_class END, ', ') AS blamed_for
FROM r LEFT JOIN f ON true
GROUP BY ALL ORDER BY r.pp_stage, r.dp_rank, r.tp_rank
"""
