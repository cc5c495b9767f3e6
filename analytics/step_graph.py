"""A job's training steps as a dependency graph of ops, and its vectorised "what if" replay.

Each rank runs its ops in program order (ops that overlap in time, e.g. Megatron's batched
send_forward_recv_backward, are issued together: they all become ready when the op before them ends,
and the op after them waits for all of them); a p2p send and its recv end together at the later start plus
the pair's own transfer time; a collective ends for every member at the last arrival plus its own time.
An op's OWN duration is its duration for compute and host ops, the later arriver's duration for a p2p
pair, the shortest member's duration for a collective; the gap between an op's ready time (the end of
the rank's previous op or batch) and its start is host-side delay. Replaying with chosen own durations and gaps
gives each step's time: step k lasts from the end of step k-1 (the last op of any rank) to its own end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from c4.analytics.step_clock import clock_offsets_s
from c4.analytics.step_trace import COLLECTIVE_OPS, COMPUTE_OPS, HOST_OPS, P2P_OPS, TraceError, p2p_keys
from c4.step_trace import OPS

OP_INDEX = {op: i for i, op in enumerate(OPS)}
KIND_COMPUTE, KIND_HOST, KIND_P2P, KIND_COLLECTIVE = 0, 1, 2, 3


@dataclass
class StepLayout:
    """Node range of one analysed step and the index arrays its replay needs."""

    step: int
    lo: int
    hi: int
    fresh: bool  # the chain restarts here (first step, or the previous step was not analysed)
    seg_first: np.ndarray  # local index of each rank's first op in the step
    seg_of: np.ndarray  # local node -> segment (rank position among the step's ranks)
    seg_rank: np.ndarray  # segment -> rank index
    grouped: (
        np.ndarray
    )  # local indices of nodes in a p2p pair, collective or TP group (they may wait on peers)
    batch_of: np.ndarray  # local node -> its batch (ops issued together; one op alone is a batch of one)
    pred_batch: np.ndarray  # local node -> the rank's batch before its own in this step, or -1
    n_batches: int
    levels: list[
        tuple[np.ndarray, np.ndarray]
    ]  # per level: nodes (sorted by group), reduceat bounds of groups
    ready0: np.ndarray  # fresh steps: each segment's first ready time relative to the step's first start
    start_epoch_s: float  # the step's first op start, Unix seconds


@dataclass
class StepGraph:
    """One job's ops (nodes sorted by step, rank, start) with own durations, gaps and their typical values."""

    job: str
    ranks: np.ndarray  # rank index -> global rank
    rank_dp: np.ndarray
    rank_pp: np.ndarray
    rank_tp: np.ndarray
    rank_host: list[str | None]
    rank_local: list[int | None]
    node_rank: np.ndarray  # node -> rank index
    node_op: np.ndarray  # node -> index into OPS
    node_kind: np.ndarray  # KIND_*
    node_stage: np.ndarray
    node_step: np.ndarray  # node -> analysed-step position
    node_link: (
        np.ndarray
    )  # p2p nodes: upstream rank index * n_ranks + downstream rank index (both ways), else -1
    node_comm: np.ndarray  # collective nodes: index into ``comms`` (the same group on every step), else -1
    comms: list[str]  # a collective group's name: its comm, or "<op>/stage<s>/tp<t>"
    own_s: np.ndarray
    gap_s: np.ndarray
    typ_own_s: (
        np.ndarray
    )  # peers' typical own duration (same op kind and stage, lower middle of per-rank medians)
    typ_gap_s: np.ndarray  # peers' typical gap before this op
    xstage_own_s: np.ndarray  # compute ops: the cross-stage typical own duration of the op
    actual_step_s: np.ndarray  # per analysed step, from the trace itself
    steps: list[StepLayout] = field(default_factory=list)
    steps_skipped: int = 0  # steps left out: a rank without ops in them, or a p2p op without its peer
    tp_synced: bool = False  # TP ranks' forward/backward end together: they wait for each other inside them

    @property
    def n_ranks(self) -> int:
        """Ranks of the job."""
        return len(self.ranks)


def _low_median(values: pl.Expr) -> pl.Expr:
    """The lower middle value (of two ranks, the faster one): peers' typical without the slow one."""
    return values.sort().gather((values.len() - 1) // 2)


def build_graph(trace: pl.DataFrame, job: str) -> StepGraph:
    """The dependency graph of one job's validated trace."""
    df = trace.filter(pl.col("job") == job).with_columns(pl.col("op").cast(pl.Enum(OPS)))
    for col in ("microbatch", "host", "local_rank", "comm"):
        if col not in df.columns:
            df = df.with_columns(
                pl.lit(None, dtype=pl.String if col in ("host", "comm") else pl.Int64).alias(col)
            )
    df = df.select(
        "job",
        "rank",
        "dp_rank",
        "pp_stage",
        "tp_rank",
        "step",
        "op",
        "start_s",
        "duration_s",
        "microbatch",
        "host",
        "local_rank",
        "comm",
    ).with_row_index("_i")
    ident = (
        df.group_by("rank")
        .agg(
            pl.col("dp_rank").first(),
            pl.col("pp_stage").first(),
            pl.col("tp_rank").first(),
            pl.col("host").drop_nulls().first(),
            pl.col("local_rank").drop_nulls().first(),
        )
        .sort("rank")
    )
    n_ranks = ident.height
    rank_index = dict(zip(ident["rank"].to_list(), range(n_ranks), strict=True))

    df = df.sort(["rank", "step", "start_s", "_i"])
    is_coll = pl.col("op").is_in(COLLECTIVE_OPS)
    mb = pl.col("microbatch").fill_null(-1)
    # collective members: the occurrence index of the op within the rank's step (in program order)
    coll = df.filter(is_coll).select(
        "_i", "rank", "step", "op", "comm", "pp_stage", "tp_rank", "dp_rank", mb.alias("_m")
    )
    coll = coll.with_columns(pl.int_range(pl.len()).over(["rank", "step", "op", "comm", "_m"]).alias("_occ"))
    coll = coll.with_columns(
        pl.when(pl.col("comm").is_not_null())
        .then(pl.struct(pl.lit(1).alias("t"), "step", "comm", "op", "_occ").hash())
        .when(pl.col("op") == "all_to_all")
        .then(pl.struct(pl.lit(2).alias("t"), "step", "pp_stage", "_m", "_occ").hash())
        .otherwise(pl.struct(pl.lit(3).alias("t"), "step", "pp_stage", "tp_rank", "op", "_occ").hash())
        .alias("_coll")
    )
    p2p = p2p_keys(df)
    pair_key = ["step", "dp_rank", "tp_rank", "_fwd", "_send_stage", "_mb", "_occ"]
    df, p2p = _aligned(df, p2p, coll, pair_key)
    tp_groups = _tp_compute_groups(df)
    if tp_groups is not None:
        coll = pl.concat([coll, tp_groups], how="diagonal_relaxed")

    # steps every rank took part in, with every p2p op paired
    sends = p2p.filter(pl.col("_is_send")).select(
        *pair_key,
        pl.col("_i").alias("_send_i"),
        pl.col("rank").alias("_send_rank"),
        pl.col("start_s").alias("_send_start"),
        pl.col("duration_s").alias("_send_dur"),
    )
    recvs = p2p.filter(~pl.col("_is_send")).select(
        *pair_key,
        pl.col("_i").alias("_recv_i"),
        pl.col("rank").alias("_recv_rank"),
        pl.col("start_s").alias("_recv_start"),
        pl.col("duration_s").alias("_recv_dur"),
    )
    pairs = sends.join(recvs, on=pair_key, how="full", coalesce=True)
    broken = set(pairs.filter(pl.col("_send_i").is_null() | pl.col("_recv_i").is_null())["step"].to_list())
    per_step = df.group_by("step").agg(pl.col("rank").n_unique().alias("n"))
    complete = sorted(set(per_step.filter(pl.col("n") == n_ranks)["step"].to_list()) - broken)
    all_steps = sorted(per_step["step"].to_list())
    steps_skipped = len(all_steps) - len(complete)

    # program order per rank across steps -> gaps
    df = df.sort(["rank", "step", "start_s", "_i"]).with_columns(
        (pl.col("start_s") + pl.col("duration_s")).alias("_end")
    )
    # batches: a rank's ops that overlap in time were issued together (never across a step boundary)
    new_batch = (
        pl.col("_prev_step").is_null()
        | (pl.col("_prev_step") != pl.col("step"))
        | (pl.col("start_s") >= pl.col("_prev_end") - OVERLAP_TOLERANCE_S)
    )
    df = df.with_columns(
        pl.col("_end").shift(1).over("rank").alias("_prev_end"),
        pl.col("step").shift(1).over("rank").alias("_prev_step"),
    )
    df = df.with_columns((new_batch.cast(pl.Int64).cum_sum() - 1).alias("_b"))
    bend = df.group_by("_b").agg(pl.col("_end").max().alias("_bend"), pl.col("rank").first().alias("_brank"))
    bend = bend.sort("_b").with_columns(
        pl.when(pl.col("_brank").shift(1) == pl.col("_brank"))
        .then(pl.col("_bend").shift(1))
        .alias("_prev_bend")
    )
    df = df.join(bend.select("_b", "_prev_bend"), on="_b", how="left")
    pos = {s: i for i, s in enumerate(complete)}
    prev_kept = {
        s: (i > 0 and complete[i - 1] == _prev_step_of(all_steps, s)) for i, s in enumerate(complete)
    }
    df = df.filter(pl.col("step").is_in(complete))
    df = df.with_columns(
        pl.col("step").replace_strict(pos, return_dtype=pl.Int64).alias("_k"),
        pl.col("step").replace_strict(prev_kept, return_dtype=pl.Boolean).alias("_chained"),
    )
    first_batch = pl.col("_b") == pl.col("_b").min().over(["rank", "step"])
    df = df.with_columns(
        pl.when(first_batch & ~pl.col("_chained"))
        .then(0.0)
        .otherwise((pl.col("start_s") - pl.col("_prev_bend")).clip(lower_bound=0.0))
        .fill_null(0.0)
        .alias("_gap")
    )

    # own durations: p2p = the later arriver's, collective = the shortest member's
    pairs = pairs.filter(pl.col("_send_i").is_not_null() & pl.col("_recv_i").is_not_null()).with_columns(
        pl.when(pl.col("_send_start") >= pl.col("_recv_start"))
        .then(pl.col("_send_dur"))
        .otherwise(pl.col("_recv_dur"))
        .alias("_pair_own"),
        pl.int_range(pl.len()).alias("_pair"),
        pl.col("_send_rank").replace_strict(rank_index).alias("_sr"),
        pl.col("_recv_rank").replace_strict(rank_index).alias("_rr"),
    )
    pair_nodes = pl.concat(
        [
            pairs.select(
                pl.col("_send_i").alias("_i"), "_pair", "_pair_own", "_send_stage", "_fwd", "_sr", "_rr"
            ),
            pairs.select(
                pl.col("_recv_i").alias("_i"), "_pair", "_pair_own", "_send_stage", "_fwd", "_sr", "_rr"
            ),
        ]
    )
    df = df.join(pair_nodes, on="_i", how="left")
    comm_name = (
        pl.when(pl.col("comm").is_not_null())
        .then(pl.format("{}/{}", "comm", "op"))
        .otherwise(pl.format("{}/stage{}/tp{}", "op", "pp_stage", "tp_rank"))
    )
    coll = coll.with_columns(pl.when(pl.col("op").is_not_null()).then(comm_name).alias("_comm_name"))
    # a collective's role from its members: TP (one replica, several TP ranks), DP (one TP rank, several
    # replicas) or other; peers of a collective are the same op and role on the same stage
    coll = coll.with_columns(
        pl.when(pl.col("dp_rank").n_unique().over("_coll") == 1)
        .then(pl.lit("tp"))
        .when(pl.col("tp_rank").n_unique().over("_coll") == 1)
        .then(pl.lit("dp"))
        .otherwise(pl.lit("x"))
        .alias("_role")
    )
    df = df.join(coll.select("_i", "_coll", "_comm_name", "_role"), on="_i", how="left")
    df = df.with_columns(
        pl.when(pl.col("_coll").is_not_null())
        .then(pl.col("duration_s").min().over("_coll"))
        .alias("_coll_own")
    )
    is_pair = pl.col("_pair").is_not_null()
    df = df.with_columns(
        pl.when(is_pair)
        .then(pl.col("_pair_own"))
        .when(pl.col("_coll").is_not_null())
        .then(pl.col("_coll_own"))
        .otherwise(pl.col("duration_s"))
        .alias("_own"),
        pl.when(is_pair)
        .then(pl.when(pl.col("_fwd")).then(pl.lit("p2p_forward")).otherwise(pl.lit("p2p_backward")))
        .when(pl.col("_comm_name").is_not_null())
        .then(pl.col("op").cast(pl.String) + pl.lit("/") + pl.col("_role"))
        .otherwise(pl.col("op").cast(pl.String))
        .alias("_ok"),
        pl.when(is_pair).then(pl.col("_send_stage")).otherwise(pl.col("pp_stage")).alias("_ks"),
    )

    # typical own and gap: per key, the lower middle of per-rank medians
    is_compute = pl.col("_ok").is_in(COMPUTE_OPS)
    typ_own = pl.concat(
        [
            # compute: the lower quartile of rank-step medians (a slow replica on half the steps, or one
            # slow rank of two, is not the typical)
            df.filter(is_compute)
            .group_by(["_ok", "_ks", "rank", "step"])
            .agg(pl.col("_own").median().alias("_m"))
            .group_by(["_ok", "_ks"])
            .agg(pl.col("_m").quantile(COMPUTE_TYPICAL_QUANTILE, "lower").alias("_typ_own")),
            df.filter(~is_compute)
            .group_by(["_ok", "_ks", "rank"])
            .agg(pl.col("_own").median().alias("_m"))
            .group_by(["_ok", "_ks"])
            .agg(_low_median(pl.col("_m")).first().alias("_typ_own")),
        ]
    )
    typ_gap = (
        df.group_by(["op", "pp_stage", "rank"])
        .agg(pl.col("_gap").median().alias("_m"))
        .group_by(["op", "pp_stage"])
        .agg(_low_median(pl.col("_m")).first().alias("_typ_gap"))
    )
    df = df.join(typ_own, on=["_ok", "_ks"], how="left").join(typ_gap, on=["op", "pp_stage"], how="left")
    xstage = (
        df.filter(pl.col("op").is_in(COMPUTE_OPS))
        .group_by(["op", "pp_stage"])
        .agg(pl.col("_typ_own").first().alias("_m"))
        .group_by("op")
        .agg(_low_median(pl.col("_m")).first().alias("_xstage"))
    )
    df = df.join(xstage, on="op", how="left").with_columns(pl.col("_xstage").fill_null(pl.col("_typ_own")))

    # node order: step, rank, start
    df = df.sort(["_k", "rank", "start_s", "_i"])
    comms = sorted(df["_comm_name"].drop_nulls().unique().to_list())
    comm_index = {c: i for i, c in enumerate(comms)}
    kind = (
        pl.when(pl.col("op").is_in(COMPUTE_OPS))
        .then(KIND_COMPUTE)
        .when(pl.col("op").is_in(HOST_OPS))
        .then(KIND_HOST)
        .when(pl.col("op").is_in(P2P_OPS))
        .then(KIND_P2P)
        .otherwise(KIND_COLLECTIVE)
    )
    df = df.with_columns(
        kind.alias("_kind"),
        pl.col("rank").replace_strict(rank_index, return_dtype=pl.Int64).alias("_r"),
        pl.col("op").replace_strict(OP_INDEX, return_dtype=pl.Int64).alias("_op"),
        pl.when(is_pair)
        .then(pl.struct(pl.lit(0).alias("t"), "_pair").hash())
        .otherwise(pl.col("_coll"))
        .alias("_group"),
        pl.when(pl.col("_pair").is_null())
        .then(-1)
        .when(pl.col("_fwd"))
        .then(pl.col("_sr") * n_ranks + pl.col("_rr"))
        .otherwise(pl.col("_rr") * n_ranks + pl.col("_sr"))
        .alias("_link"),
    )
    g = StepGraph(
        job=job,
        ranks=ident["rank"].to_numpy(),
        rank_dp=ident["dp_rank"].to_numpy(),
        rank_pp=ident["pp_stage"].to_numpy(),
        rank_tp=ident["tp_rank"].to_numpy(),
        rank_host=ident["host"].to_list(),
        rank_local=ident["local_rank"].to_list(),
        node_rank=df["_r"].to_numpy(),
        node_op=df["_op"].to_numpy(),
        node_kind=df["_kind"].to_numpy(),
        node_stage=df["pp_stage"].to_numpy(),
        node_step=df["_k"].to_numpy(),
        node_link=df["_link"].to_numpy(),
        node_comm=df["_comm_name"].replace_strict(comm_index, default=-1, return_dtype=pl.Int64).to_numpy(),
        comms=comms,
        own_s=df["_own"].to_numpy().astype(float),
        gap_s=df["_gap"].to_numpy().astype(float),
        typ_own_s=df["_typ_own"].to_numpy().astype(float),
        typ_gap_s=df["_typ_gap"].to_numpy().astype(float),
        xstage_own_s=df["_xstage"].to_numpy().astype(float),
        actual_step_s=np.zeros(len(complete)),
        steps_skipped=steps_skipped,
        tp_synced=tp_groups is not None,
    )
    starts = df["start_s"].to_numpy()
    ends = df["_end"].to_numpy()
    groups = df["_group"].fill_null(0).to_numpy()
    in_group = df["_group"].is_not_null().to_numpy()
    batches = df["_b"].to_numpy()
    level_cache: dict[bytes, list[tuple[np.ndarray, np.ndarray]]] = {}
    chained = df["_chained"].to_numpy()
    bounds = np.searchsorted(g.node_step, np.arange(len(complete) + 1))
    prev_end_job = None
    for k, step in enumerate(complete):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        fresh = not bool(chained[lo])
        layout = _layout(
            step,
            lo,
            hi,
            fresh,
            g.node_rank[lo:hi],
            groups[lo:hi],
            in_group[lo:hi],
            batches[lo:hi],
            starts[lo:hi],
            level_cache,
        )
        end_k = float(ends[lo:hi].max())
        g.actual_step_s[k] = end_k - (layout.start_epoch_s if fresh or prev_end_job is None else prev_end_job)
        prev_end_job = end_k
        g.steps.append(layout)
    return g


#: A compute op's typical own duration: this quantile of its rank-step medians (same op and stage).
COMPUTE_TYPICAL_QUANTILE = 0.25
#: A rank's op that starts this much before the previous one ends overlaps it: both were issued together.
OVERLAP_TOLERANCE_S = 1e-5
#: TP ranks whose forward/backward end within this share of the op's duration wait for each other inside it.
TP_SYNC_SPREAD = 0.02


def _tp_compute_groups(df: pl.DataFrame) -> pl.DataFrame | None:
    """Forward/backward of one microbatch on the TP ranks of a stage and replica, as groups (_i, _coll), when
    the trace shows them ending together (the layers' tensor-parallel all-reduces); None otherwise."""
    if df["tp_rank"].n_unique() < 2:
        return None
    comp = df.filter(pl.col("op").is_in(("forward", "backward"))).select(
        "_i",
        "rank",
        "step",
        "pp_stage",
        "dp_rank",
        "op",
        pl.col("microbatch").fill_null(-1).alias("_m"),
        (pl.col("start_s") + pl.col("duration_s")).alias("_e"),
        "duration_s",
    )
    comp = comp.with_columns(pl.int_range(pl.len()).over(["rank", "step", "op", "_m"]).alias("_occ"))
    comp = comp.with_columns(
        pl.struct(pl.lit(4).alias("t"), "step", "pp_stage", "dp_rank", "op", "_m", "_occ")
        .hash()
        .alias("_coll")
    )
    spread = (
        comp.group_by("_coll")
        .agg(
            ((pl.col("_e").max() - pl.col("_e").min()) / pl.col("duration_s").max()).alias("sp"),
            pl.len().alias("n"),
        )
        .filter(pl.col("n") > 1)
    )
    if spread.is_empty() or float(spread["sp"].median()) > TP_SYNC_SPREAD:
        return None
    return comp.select("_i", "_coll")


def _aligned(
    df: pl.DataFrame, p2p: pl.DataFrame, coll: pl.DataFrame, pair_key: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The trace and its p2p rows with every rank's start_s on one clock (see step_clock)."""
    ends = df.select("_i", "rank", (pl.col("start_s") + pl.col("duration_s")).alias("end_s"))
    pair_id = p2p.select("_i", pl.struct(pair_key).hash().alias("group"))
    nodes = pl.concat(
        [
            ends.join(pair_id, on="_i").select("rank", "end_s", "group"),
            ends.join(coll.select("_i", pl.col("_coll").alias("group")), on="_i").select(
                "rank", "end_s", "group"
            ),
        ]
    )
    offsets = clock_offsets_s(nodes)
    if not offsets or not any(offsets.values()):
        return df, p2p
    shift = pl.col("start_s") - pl.col("rank").replace_strict(offsets, default=0.0, return_dtype=pl.Float64)
    return df.with_columns(shift), p2p.with_columns(shift)


def _prev_step_of(all_steps: list[int], step: int) -> int | None:
    i = all_steps.index(step)
    return all_steps[i - 1] if i > 0 else None


def _layout(
    step: int,
    lo: int,
    hi: int,
    fresh: bool,
    rank: np.ndarray,
    groups: np.ndarray,
    is_grouped: np.ndarray,
    batches: np.ndarray,
    starts: np.ndarray,
    level_cache: dict[bytes, list[tuple[np.ndarray, np.ndarray]]],
) -> StepLayout:
    n = hi - lo
    change = np.ones(n, dtype=bool)
    change[1:] = rank[1:] != rank[:-1]
    seg_first = np.flatnonzero(change)
    seg_of = np.cumsum(change) - 1
    batch_of = np.cumsum(np.r_[False, batches[1:] != batches[:-1]])  # in node order, batches are consecutive
    n_batches = int(batch_of[-1]) + 1 if n else 0
    first_batch_of_seg = batch_of[seg_first]
    pred_batch = np.where(batch_of > first_batch_of_seg[seg_of], batch_of - 1, -1)
    # every node's group: its p2p pair, collective or TP group, else a group of its own
    group_of = np.empty(n, dtype=np.int64)
    _, inverse = np.unique(groups[is_grouped], return_inverse=True)
    n_shared = int(inverse.max()) + 1 if len(inverse) else 0
    group_of[is_grouped] = inverse.ravel()
    group_of[~is_grouped] = n_shared + np.arange(int((~is_grouped).sum()))
    signature = b"".join(a.tobytes() for a in (group_of, batch_of, pred_batch))
    if signature not in level_cache:
        batch_seg = seg_of[np.flatnonzero(np.r_[True, np.diff(batch_of) != 0])]
        level_cache[signature] = _levels(group_of, batch_of, pred_batch, n_batches, batch_seg)
    return StepLayout(
        step=step,
        lo=lo,
        hi=hi,
        fresh=fresh,
        seg_first=seg_first,
        seg_of=seg_of,
        seg_rank=rank[seg_first],
        grouped=np.flatnonzero(is_grouped),
        batch_of=batch_of,
        pred_batch=pred_batch,
        n_batches=n_batches,
        levels=level_cache[signature],
        ready0=starts[seg_first] - float(starts.min()),
        start_epoch_s=float(starts.min()),
    )


def _levels(
    group_of: np.ndarray, batch_of: np.ndarray, pred_batch: np.ndarray, n_batches: int, batch_seg: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Groups batched by dependency depth: every node of a level follows only batches of earlier levels.

    A group's level is one more than the highest level among its members' preceding batches; a batch's
    level is the highest of its members' groups. Along a rank, levels grow by at least one per batch,
    which a running maximum closes in one pass; the fixed point takes as many passes as the longest
    chain of waits from one rank to another.
    """
    n_groups = int(group_of.max()) + 1
    order_g = np.argsort(group_of, kind="stable")
    g_bounds = np.flatnonzero(np.r_[True, np.diff(group_of[order_g]) != 0])
    b_first = np.flatnonzero(np.r_[True, np.diff(batch_of) != 0])
    b_index = np.arange(n_batches)
    big = n_batches + 2
    level_g = np.ones(n_groups, dtype=np.int64)
    has_pred = pred_batch >= 0
    for _ in range(n_batches + 2):
        push = np.maximum.reduceat(level_g[group_of], b_first)
        # level_b[b] = max over earlier batches j of the same rank of push[j] + (b - j)
        v = push - b_index + batch_seg * big * 2
        level_b = np.maximum.accumulate(v) - batch_seg * big * 2 + b_index
        need = np.ones(len(group_of), dtype=np.int64)
        need[has_pred] = level_b[pred_batch[has_pred]] + 1
        new = np.maximum.reduceat(need[order_g], g_bounds)
        if np.array_equal(new, level_g):
            break
        level_g = new
    else:
        raise TraceError(
            "the step's ops depend on each other in a cycle (a recv before the send it waits on)"
        )
    node_level = level_g[group_of]
    order = np.lexsort((group_of, node_level))
    out = []
    bounds = np.flatnonzero(np.r_[True, node_level[order][1:] != node_level[order][:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        members = order[a:b]
        gm = group_of[members]
        out.append((members, np.flatnonzero(np.r_[True, gm[1:] != gm[:-1]])))
    return out


@dataclass
class Replay:
    """Per scenario (columns): each step's time and each rank's time spent waiting on peers."""

    step_s: np.ndarray  # (steps, scenarios)
    wait_s: np.ndarray  # (steps, ranks, scenarios)


def replay(g: StepGraph, own_s: list[np.ndarray], gap_s: list[np.ndarray]) -> Replay:
    """Replay every step under S scenarios at once (own_s[s], gap_s[s]: per-node arrays)."""
    n_sc = len(own_s)
    step_s = np.zeros((len(g.steps), n_sc))
    wait_s = np.zeros((len(g.steps), g.n_ranks, n_sc))
    carry = np.zeros((g.n_ranks, n_sc))
    for k, lay in enumerate(g.steps):
        own = np.stack([o[lay.lo : lay.hi] for o in own_s], axis=1)
        gap = np.stack([x[lay.lo : lay.hi] for x in gap_s], axis=1)
        if lay.fresh:
            ready0 = np.repeat(lay.ready0[:, None], n_sc, axis=1)
        else:
            ready0 = carry[lay.seg_rank]
        start, end = _replay_step(lay, own, gap, ready0)
        step_end = end.max(axis=0)
        step_s[k] = step_end
        carry[:] = 0.0
        carry[lay.seg_rank] = np.maximum.reduceat(end, lay.seg_first, axis=0) - step_end
        wait = np.zeros_like(own)
        if len(lay.grouped):
            gi = lay.grouped
            wait[gi] = np.maximum(end[gi] - start[gi] - own[gi], 0.0)
        wait_s[k, lay.seg_rank] = np.add.reduceat(wait, lay.seg_first, axis=0)
    return Replay(step_s=step_s, wait_s=wait_s)


def _replay_step(
    lay: StepLayout, own: np.ndarray, gap: np.ndarray, ready0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of every node of one step, level by level (S scenarios as columns)."""
    n_sc = own.shape[1]
    batch_end = np.full((lay.n_batches, n_sc), -np.inf)
    start = np.empty_like(own)
    end = np.empty_like(own)
    for members, bounds in lay.levels:
        pred = lay.pred_batch[members]
        ready = np.where((pred >= 0)[:, None], batch_end[np.maximum(pred, 0)], ready0[lay.seg_of[members]])
        st = ready + gap[members]
        sync = np.maximum.reduceat(st, bounds, axis=0)
        en = np.repeat(sync, np.diff(np.r_[bounds, len(members)]), axis=0) + own[members]
        start[members] = st
        end[members] = en
        np.maximum.at(batch_end, lay.batch_of[members], en)
    return start, end
