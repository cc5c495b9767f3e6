"""Which job each communicator serves and its role there (TP, DP, PP, EP), from NCCL Inspector records.

A rank belongs to several communicators: tensor-parallel (TP: a few GPUs of one node, NVLink),
data-parallel (DP: the same model slice on every replica, across nodes), pipeline-parallel (PP: point
to point sends and receives between adjacent stages) and, in mixture-of-experts models, expert-parallel
(EP: all-to-all). The role follows from what the communicator does and where its members sit:

- only Send/Recv records (Inspector ``kind = p2p``): PP
- any all-to-all (Inspector writes ``All2All``): EP
- every process of the job, when other collective groups exist beside it: WORLD
- a collective group across nodes doing AllReduce / ReduceScatter / AllGather: DP
- a group inside one node: TP when its ranks are also in a group that crosses nodes; beside another
  group inside the node, the one with twice the records per rank is TP (it runs every microbatch,
  DP once or twice a step), else the one of neighbouring GPUs (0-3, against 0, 4); DP when its ranks
  are in no other collective group (tensor parallelism of 1: data-parallel groups of one node)
- anything else (e.g. only Broadcast across nodes, a one-rank group): OTHER

Membership is by process (host and pid as Inspector writes them: a process drives one GPU), so it
needs no GPU identity; member GPUs come from the rank_identity view where it knows them.

Inspector's op names come from ``ncclFuncToString`` (NVIDIA/nccl 5342488f,
plugins/profiler/inspector/inspector.cc:205-219: AllGather, AllReduce, Broadcast, Recv, Reduce,
ReduceScatter, SendRecv, Send, All2All, AllGatherV); ``p2p_perf`` records carry ``p2p`` (Send or Recv),
``p2p_peer`` and ``p2p_exec_time_us`` (inspector_json.cc:231-249).
"""

from __future__ import annotations

import polars as pl

from c4.analytics.jobs import with_job
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


def _op_key(op: str) -> str:
    """An op name compared loosely: "All2All" -> "all2all", "reduce_scatter" -> "reducescatter"."""
    return "".join(ch for ch in op.lower() if ch.isalnum())


def _contiguous(gpus: list[str]) -> bool:
    """The members are neighbouring GPUs of one node (0-3, 4-7: how tensor parallelism is laid out)."""
    idx = sorted(int(g.rsplit("gpu", 1)[1]) for g in gpus if "gpu" in g)
    return bool(idx) and idx == list(range(idx[0], idx[0] + len(idx)))


def _first_role(c: dict, job_size: int, groups: int) -> str | None:
    """The role that what a communicator does decides alone (PP, EP, WORLD), else None."""
    ops = {_op_key(o) for o in c["ops"]}
    if c["p2p_only"]:
        return "PP"
    if ops & ALL_TO_ALL_OPS:
        return "EP"
    if groups > 1 and c["n_ranks"] > 1 and c["n_ranks"] >= job_size:
        return "WORLD"
    return None


def _group_role(c: dict, partners: list[dict]) -> str:
    """TP or DP for a collective communicator, from where its members sit and the other collective
    groups (``partners``) they also belong to: every rank is in one TP and one DP group."""
    if c["nodes"] > 1:
        return "DP" if {_op_key(o) for o in c["ops"]} & DP_OPS else "OTHER"
    if not partners:
        return "DP"  # its ranks share data with no other group: no tensor parallelism
    if any(p["nodes"] > 1 for p in partners):
        return "TP"  # the inner, intra-node group of a rank whose other group crosses nodes
    # both on one node: TP runs collectives every microbatch, DP once or twice a step
    busiest = max(p["per_rank"] for p in partners)
    if c["per_rank"] >= 2 * busiest:
        return "TP"
    if 2 * c["per_rank"] <= busiest:
        return "DP"
    mine, theirs = _contiguous(c["gpus"]), any(_contiguous(p["gpus"]) for p in partners)
    return "DP" if theirs and not mine else "TP"  # TP takes neighbouring GPUs (0-3; DP 0, 4)


def _members(colls: pl.DataFrame, places: RankPlaces) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """Per communicator, its members' GPUs ("host/gpuN") where the identity view or the host places
    them, and its members' processes ("host:pid" as Inspector wrote them, else the GPU)."""
    gpus: dict[str, set[str]] = {}
    procs: dict[str, set[str]] = {}
    c = colls if "pid" in colls.columns else colls.with_columns(pl.lit(None, dtype=pl.Int64).alias("pid"))
    for comm, rank, host, pid in (
        c.select(["comm_id", "rank", "hostname", "pid"]).unique(["comm_id", "rank"]).rows()
    ):
        where = places.of(comm, rank, host or None)
        gpu = where.component if where is not None else f"{comm}/rank{rank}"
        gpus.setdefault(comm, set()).add(gpu)
        procs.setdefault(comm, set()).add(f"{host}:{pid}" if host and pid is not None else gpu)
    return {k: sorted(v) for k, v in gpus.items()}, procs


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
            (pl.len() / pl.col("rank").n_unique()).alias("per_rank"),
        )
        .sort(["job", "comm_id"])
    )
    gpus, procs = _members(c, places)
    rows = []
    for _, g in per.group_by(["job"], maintain_order=True):
        comms = g.to_dicts()
        for x in comms:
            x["gpus"], x["procs"] = gpus.get(x["comm_id"], []), procs.get(x["comm_id"], set())
        job_size = len({p for x in comms for p in x["procs"]}) or max(x["n_ranks"] for x in comms)
        groups = sum(1 for x in comms if not x["p2p_only"])
        for x in comms:
            x["role"] = _first_role(x, job_size, groups)
        plain = [x for x in comms if x["role"] is None and x["n_ranks"] > 1]
        groups_of: dict[str, list[int]] = {}  # process -> the plain groups it is in
        for i, x in enumerate(plain):
            for p in x["procs"]:
                groups_of.setdefault(p, []).append(i)
        for i, x in enumerate(plain):
            near = {j for p in x["procs"] for j in groups_of[p] if j != i}
            x["role"] = _group_role(x, [plain[j] for j in sorted(near)])
        for x in comms:
            x["role"] = x["role"] or "OTHER"
        rows += [{k: x[k] for k in _SCHEMA} for x in comms]
    return pl.DataFrame(rows, schema=_SCHEMA)
