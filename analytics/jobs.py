"""Which job each NCCL record belongs to: the agent's job label, else the job its communicators form.

An agent started per node (systemd, a DaemonSet) does not see the scheduler's job id, so its rows carry
``job = ""``; several jobs on one cluster would then look like one. A process belongs to one job and
every communicator joins processes of one job, so the jobs are the connected groups of processes
joined by communicators (a process is its host and pid as Inspector writes them). Rows without a
label get their group's label where another row of the group has one; otherwise, when the unlabelled
rows form several groups, each is named ``comms:<its smallest communicator id>``; a single group keeps "".
"""

from __future__ import annotations

import polars as pl

#: The prefix of a job named after its communicators (no agent labelled it).
DERIVED_PREFIX = "comms:"


def _components(links: list[tuple[str, str]]) -> dict[str, str]:
    """Communicator -> a representative of its group (union of communicators that share a process)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_comm: dict[str, str] = {}
    for comm, proc in links:
        find(comm)
        if proc in first_comm:
            parent[find(comm)] = find(first_comm[proc])
        else:
            first_comm[proc] = comm
    return {c: find(c) for c in parent}


def _derived_jobs(colls: pl.DataFrame) -> dict[str, str]:
    """comm_id -> the job of its group, for the communicators of rows without a label."""
    proc = pl.format("{}:{}", pl.col("hostname").fill_null(""), pl.col("pid").fill_null(-1))
    if "pid" not in colls.columns:
        proc = pl.format("{}:{}", pl.col("hostname").fill_null(""), pl.col("rank"))  # no pid: no process
    pairs = colls.select(pl.col("comm_id"), proc.alias("proc"), pl.col("job")).unique(["comm_id", "proc"])
    group = _components([(c, p) for c, p in pairs.select(["comm_id", "proc"]).rows()])
    labels: dict[str, dict[str, int]] = {}
    for comm, job in pairs.filter(pl.col("job") != "").select(["comm_id", "job"]).rows():
        votes = labels.setdefault(group[comm], {})
        votes[job] = votes.get(job, 0) + 1
    members: dict[str, list[str]] = {}
    for comm, g in group.items():
        members.setdefault(g, []).append(comm)
    unlabelled = [g for g in members if g not in labels]
    out = {}
    for g, comms in members.items():
        if g in labels:
            name = max(sorted(labels[g]), key=labels[g].get)
        else:
            name = f"{DERIVED_PREFIX}{min(comms)}" if len(unlabelled) > 1 else ""
        out.update({c: name for c in comms})
    return out


def with_job(colls: pl.DataFrame) -> pl.DataFrame:
    """``colls`` with a ``job`` on every row: the agent's label, else the job its communicators form."""
    if "job" not in colls.columns:
        colls = colls.with_columns(pl.lit("", dtype=pl.String).alias("job"))
    colls = colls.with_columns(pl.col("job").fill_null(""))
    if colls.is_empty() or "comm_id" not in colls.columns or "hostname" not in colls.columns:
        return colls
    if not (colls["job"] == "").any():
        return colls
    jobs = _derived_jobs(colls)
    derived = pl.col("comm_id").replace_strict(jobs, default="", return_dtype=pl.String)
    return colls.with_columns(
        pl.when(pl.col("job") == "").then(derived).otherwise(pl.col("job")).alias("job")
    )
