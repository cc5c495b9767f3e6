"""Client side of job accounting: each job's goodput and what each fault cost, from the collector's views."""

from __future__ import annotations

import grpc
import pyarrow as pa

from c4.query import open_channel, query_arrow
from c4.sql_text import string_literal

#: One row per job (the catalogue's ``job_goodput`` view), worst ETTR first; {where} picks a job.
JOBS_SQL = (
    "SELECT job, wall_s, productive_s, ettr, lost_s, hung_s, slowed_s, restarting_s, redone_s, unexplained_s, "
    "gpus, runs, gpu_hours_lost, redone_unknown, start, end_ts FROM job_goodput{where} ORDER BY ettr, job"
)
#: Faults by the GPU-hours they cost (the ``fault_cost`` view).
FAULTS_SQL = (
    "SELECT fault_id, job, fault_class, component, gpu_hours_lost, lost_s, hung_s, slowed_s, restarting_s, "
    "redone_s FROM fault_cost{where} ORDER BY gpu_hours_lost DESC, fault_id LIMIT {top}"
)


def goodput(
    address_or_channel: str | grpc.Channel, job: str = "", top: int = 10
) -> tuple[pa.Table, pa.Table]:
    """(per-job goodput rows, the ``top`` faults by GPU-hours lost), for one job when ``job`` is given."""
    own = isinstance(address_or_channel, str)
    channel = open_channel(address_or_channel) if own else address_or_channel
    where = f" WHERE job = {string_literal(job)}" if job else ""
    try:
        jobs, _ = query_arrow(channel, JOBS_SQL.format(where=where))
        faults, _ = query_arrow(channel, FAULTS_SQL.format(where=where, top=int(top)))
        return jobs, faults
    finally:
        if own:
            channel.close()
