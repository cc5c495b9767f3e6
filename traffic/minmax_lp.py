"""The min-max routing LP (HiGHS): each connection's fractions over its candidate paths that minimize the busiest link.

Variables: t (seconds to drain the busiest link) and x[c, j], the fraction of connection c on
its path j. Rows: sum_j x[c, j] = 1 per connection; per link, sum of bytes over it / capacity
<= t. The simplex optimum is a vertex, so few connections use more than one path (at most as
many as there are rows). A connection over the piece limit keeps its largest fractions and the
LP is solved again with that connection confined to them, until every connection fits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

# The core class: highspy.Highs's callback set-up prints a banner to stdout when it is built,
# the core class stays silent with output_flag off (both are in highspy's __all__).
from highspy import HighsModelStatus, ObjSense, _Highs, kHighsInf

#: fractions below this are dropped (the solver's zeros)
ZERO_FRACTION = 1e-9


class LpError(RuntimeError):
    """HiGHS did not reach an optimum."""


def _model(
    sizes_bytes: Sequence[float], options: Sequence[Sequence[Sequence[int]]], cap_bps: np.ndarray
) -> _Highs:
    """The LP: column 0 is t, then one column per (connection, path) in order."""
    h = _Highs()
    h.setOptionValue("output_flag", False)
    n_cols = 1 + sum(len(o) for o in options)
    costs = np.zeros(n_cols)
    costs[0] = 1.0
    h.addCols(
        n_cols,
        costs,
        np.zeros(n_cols),
        np.full(n_cols, kHighsInf),
        0,
        np.zeros(0, dtype=np.int32),
        np.zeros(0, dtype=np.int32),
        np.zeros(0),
    )
    h.changeObjectiveSense(ObjSense.kMinimize)
    starts, index, value = [], [], []
    on_link: dict[int, list[tuple[int, float]]] = defaultdict(list)
    col = 1
    for size, paths in zip(sizes_bytes, options, strict=True):
        starts.append(len(index))
        for links in paths:
            index.append(col)
            value.append(1.0)
            for lid in links:
                on_link[lid].append((col, size / float(cap_bps[lid])))
            col += 1
    n_conn = len(options)
    for lid in sorted(on_link):
        starts.append(len(index))
        for c, coef in on_link[lid]:
            index.append(c)
            value.append(coef)
        index.append(0)
        value.append(-1.0)
    lower = np.concatenate([np.ones(n_conn), np.full(len(on_link), -kHighsInf)])
    upper = np.concatenate([np.ones(n_conn), np.zeros(len(on_link))])
    h.addRows(
        len(lower),
        lower,
        upper,
        len(index),
        np.array(starts, dtype=np.int32),
        np.array(index, dtype=np.int32),
        np.array(value),
    )
    return h


def _solve(h: _Highs) -> np.ndarray:
    """Run HiGHS and return the column values."""
    h.run()
    status = h.getModelStatus()
    if status != HighsModelStatus.kOptimal:
        raise LpError(f"min-max routing LP: HiGHS ended with {status.name}")
    return np.asarray(h.getSolution().col_value)


def min_max_fractions(
    sizes_bytes: Sequence[float],
    options: Sequence[Sequence[Sequence[int]]],
    cap_bps: np.ndarray,
    max_paths: int,
) -> list[np.ndarray]:
    """Per connection, its fraction on each of its options (link-id lists), at most max_paths of them non-zero.

    Every option must use only links with positive capacity (cap_bps, bytes per second); every
    connection needs at least one option. The fractions of a connection sum to 1.
    """
    if any(not o for o in options):
        raise ValueError("min_max_fractions: a connection has no path")
    h = _model(sizes_bytes, options, cap_bps)
    offsets = np.cumsum([1] + [len(o) for o in options])
    limit = max(1, max_paths)
    for _ in range(len(options) + 1):  # each round confines at least one more connection to its kept paths
        x = _solve(h)
        dropped: list[int] = []
        for c in range(len(options)):
            lo, hi = offsets[c], offsets[c + 1]
            used = np.flatnonzero(x[lo:hi] > ZERO_FRACTION)
            if len(used) > limit:
                keep = set(used[np.argsort(-x[lo:hi][used], kind="stable")[:limit]].tolist())
                dropped += [lo + j for j in range(hi - lo) if j not in keep]
        if not dropped:
            break
        cols = np.array(dropped, dtype=np.int32)
        h.changeColsBounds(len(cols), cols, np.zeros(len(cols)), np.zeros(len(cols)))
    else:
        raise LpError("min-max routing LP: the piece limit was not met")
    out = []
    for c in range(len(options)):
        f = np.where(x[offsets[c] : offsets[c + 1]] > ZERO_FRACTION, x[offsets[c] : offsets[c + 1]], 0.0)
        out.append(f / f.sum())
    return out
