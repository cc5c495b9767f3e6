"""A job's latest stored plan, read back from a collector: what a new plan replaces and which pieces it moves."""

from __future__ import annotations

from dataclasses import dataclass

from c4.query import query_arrow
from c4.sql_text import string_literal
from c4.traffic.export import PieceKey, Route, stored_routes


@dataclass
class PreviousPlan:
    """The plan a new one replaces: its id and its pieces' routes."""

    plan_id: str
    routes: dict[PieceKey, Route]


def latest_plan_sql(job: str, piece_jobs: list[str]) -> str:
    """The newest plan of a job: its plan_runs rows, else plans whose pieces belong to the job's flows."""
    names = ", ".join(string_literal(j) for j in sorted(set(piece_jobs) | {job}))
    return (
        "SELECT plan_id FROM ("
        f"SELECT plan_id, ts FROM plan_runs WHERE job = {string_literal(job)} "
        f"UNION ALL SELECT plan_id, max(ts) AS ts FROM plans WHERE job IN ({names}) GROUP BY plan_id"
        ") ORDER BY ts DESC, plan_id LIMIT 1"
    )


def latest_plan(address: str, job: str, piece_jobs: list[str]) -> PreviousPlan | None:
    """The job's newest plan on the collector at ``address`` (None when it has none).

    Raises QueryError when the collector cannot be asked (unreachable, or no reader token).
    """
    found, _ = query_arrow(address, latest_plan_sql(job, piece_jobs))
    if not found.num_rows:
        return None
    plan_id = found.column("plan_id")[0].as_py()
    rows, _ = query_arrow(
        address,
        f"SELECT src, dst, channel, qp, src_port, dst_port, path FROM plans WHERE plan_id = {string_literal(plan_id)}",
    )
    return PreviousPlan(plan_id, stored_routes(rows.to_pylist()))
