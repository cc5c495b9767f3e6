"""Which job each communicator serves and its role there (TP, DP, PP, EP), from NCCL Inspector records.

A rank belongs to several communicators: tensor-parallel (TP: a few GPUs of one node, NVLink),
data-parallel (DP: the same model slice on every replica, across nodes), pipeline-parallel (PP: point
to point sends and receives between adjacent stages) and, in mixture-of-experts models, expert-parallel
(EP: all-to-all). The role follows from what the communicator does and where its members sit:

- only Send/Recv records (Inspector ``kind = p2p``): PP
- any all-to-all (Inspector writes ``All2All``): EP
- collectives among GPUs of one node while the job spans several nodes: TP
- the job's largest communicator, when smaller collective ones exist beside it: WORLD
- AllReduce / ReduceScatter / AllGather across nodes: DP (also a one-node job's only collective group)
- anything else (e.g. only Broadcast): OTHER

Inspector's op names come from ``ncclFuncToString`` (NVIDIA/nccl 5342488f,
plugins/profiler/inspector/inspector.cc:205-219: AllGather, AllReduce, Broadcast, Recv, Reduce,
ReduceScatter, SendRecv, Send, All2All, AllGatherV); ``p2p_perf`` records carry ``p2p`` (Send or Recv),
``p2p_peer`` and ``p2p_exec_time_us`` (inspector_json.cc:231-249).
"""

from __future__ import annotations

import polars as pl

from c4.analytics.rank_gpu import RankPlaces

ROLES = ("TP", "DP", "PP", "EP", "WORLD", "OTHER")
#: Point-to-point operations as Inspector names them.
P2P_OPS = frozenset({"send", "recv", "sendrecv"})
#: All-to-all as Inspector (All2All) and other sources (AlltoAll, AllToAllV) name it, lowercased.
ALL_TO_ALL_OPS = frozenset({"all2all", "alltoall", "alltoallv", "all2allv"})
#: The collectives data parallelism reduces gradients (and gathers shards) with, lowercased.
DP_OPS = frozenset({"allreduce", "reducescatter", "allgather", "allgatherv"})

_SCHEMA = {
    "job": pl.String,
    "comm_id": pl.String,
    "role": pl.String,
    "n_ranks": pl.Int64,
    "nodes": pl.Int64,
    "hosts": pl.List(pl.String),
    "ops": pl.List(pl.String),
    "gpus": pl.List(pl.String),
}


def with_job(colls: pl.DataFrame) -> pl.DataFrame:
    """``colls`` with a ``job`` column ("" where none is known), so every detector can partition by it."""
    if "job" not in colls.columns:
        return colls.with_columns(pl.lit("", dtype=pl.String).alias("job"))
    return colls.with_columns(pl.col("job").fill_null(""))


def _op_key(op: str) -> str:
    """An op name compared loosely: "All2All" -> "all2all", "reduce_scatter" -> "reducescatter"."""
    return "".join(ch for ch in op.lower() if ch.isalnum())


def _contiguous(gpus: list[str]) -> bool:
    """The members are neighbouring GPUs of one node (0-3, 4-7: how tensor parallelism is laid out)."""
    idx = sorted(int(g.rsplit("gpu", 1)[1]) for g in gpus if "gpu" in g)
    return bool(idx) and idx == list(range(idx[0], idx[0] + len(idx)))


def _role(c: dict, job_nodes: int, job_gpus: int, groups: int) -> str:
    """The role of one communicator (a row of the per-communicator summary) inside its job of
    ``job_nodes`` nodes and ``job_gpus`` GPUs with ``groups`` collective (non-p2p) communicators."""
    ops = {_op_key(o) for o in c["ops"]}
    if c["p2p_only"]:
        return "PP"
    if ops & ALL_TO_ALL_OPS:
        return "EP"
    if c["nodes"] <= 1 and job_nodes > 1:
        return "TP"
    if c["nodes"] <= 1 and groups > 1 and _contiguous(c["gpus"]) and c["n_ranks"] < job_gpus:
        return "TP"  # a one-node job: its tensor-parallel groups are neighbouring GPUs
    if groups > 1 and c["n_ranks"] > 1 and c["n_ranks"] >= job_gpus:
        return "WORLD"
    if ops & DP_OPS:
        return "DP"
    return "OTHER"


def _members(colls: pl.DataFrame, places: RankPlaces) -> dict[str, list[str]]:
    """Per communicator, its members' GPUs ("host/gpuN") where the identity view or the host places them."""
    out: dict[str, list[str]] = {}
    for comm, rank, host in colls.select(["comm_id", "rank", "hostname"]).unique(["comm_id", "rank"]).rows():
        where = places.of(comm, rank, host or None)
        if where is not None:
            out.setdefault(comm, []).append(where.component)
    return {c: sorted(set(g)) for c, g in out.items()}


def communicator_roles(colls: pl.DataFrame, places: RankPlaces | None = None) -> pl.DataFrame:
    """One row per (job, comm_id): role, n_ranks, nodes (count), hosts, ops and member GPUs.

    ``colls`` is nccl_collectives (collective and p2p records); ``places`` (the rank_identity view)
    names each member's GPU, else its host and rank % GPUs per node do.
    """
    if colls.is_empty():
        return pl.DataFrame(schema=_SCHEMA)
    places = places or RankPlaces()
    c = with_job(colls)
    if "nnodes" not in c.columns:
        c = c.with_columns(pl.lit(None, dtype=pl.Int64).alias("nnodes"))
    if "n_ranks" not in c.columns:
        c = c.with_columns(pl.lit(None, dtype=pl.Int64).alias("n_ranks"))
    kind = pl.col("kind").fill_null("coll")
    p2p = (kind == "p2p") | pl.col("coll").str.to_lowercase().is_in(list(P2P_OPS))
    per = (
        c.group_by(["job", "comm_id"])
        .agg(
            pl.max_horizontal(pl.col("n_ranks").max(), pl.col("rank").n_unique()).alias("n_ranks"),
            pl.max_horizontal(pl.col("nnodes").max(), pl.col("hostname").drop_nulls().n_unique()).alias(
                "nodes"
            ),
            pl.col("hostname").drop_nulls().unique().sort().alias("hosts"),
            pl.col("coll").drop_nulls().unique().sort().alias("ops"),
            p2p.all().alias("p2p_only"),
        )
        .sort(["job", "comm_id"])
    )
    members = _members(c, places)
    rows = []
    for _, g in per.group_by(["job"], maintain_order=True):
        comms = g.to_dicts()
        for x in comms:
            x["gpus"] = members.get(x["comm_id"], [])
        job_nodes = len({h for x in comms for h in x["hosts"]})
        job_gpus = len({gpu for x in comms for gpu in x["gpus"]}) or max(x["n_ranks"] for x in comms)
        groups = sum(1 for x in comms if not x["p2p_only"])
        for x in comms:
            x["role"] = _role(x, job_nodes, job_gpus, groups)
            rows.append({k: x[k] for k in _SCHEMA})
    return pl.DataFrame(rows, schema=_SCHEMA)
