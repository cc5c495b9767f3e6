"""Max-min fair fluid simulation (progressive filling): per-flow rates and completion time of a collective."""

from __future__ import annotations

import numpy as np


class FluidSim:
    """Flows given as (link ids with fractions, bytes); links with capacities in bytes/s."""

    def __init__(self, cap: np.ndarray, flows: list[tuple[dict[int, float] | list[int], float]]) -> None:
        rows, cols, vals, sizes = [], [], [], []
        for i, (links, size) in enumerate(flows):
            items = links.items() if isinstance(links, dict) else ((lid, 1.0) for lid in links)
            for lid, x in items:
                rows.append(i)
                cols.append(lid)
                vals.append(x)
            sizes.append(size)
        self.flow_of = np.array(rows, dtype=np.int64)
        self.link_of = np.array(cols, dtype=np.int64)
        self.frac = np.array(vals, dtype=np.float64)
        self.size = np.array(sizes, dtype=np.float64)
        self.cap = cap.astype(np.float64)
        self.n_flows = len(flows)
        self.n_links = len(cap)

    def rates(self, active: np.ndarray) -> np.ndarray:
        """Max-min fair rates (bytes/s) of the active flows by progressive filling."""
        rate = np.zeros(self.n_flows)
        frozen = ~active.copy()
        residual = self.cap.copy()
        mask = active[self.flow_of]
        while True:
            live = mask & ~frozen[self.flow_of]
            if not live.any():
                return rate
            weight = np.bincount(self.link_of[live], weights=self.frac[live], minlength=self.n_links)
            with np.errstate(divide="ignore", invalid="ignore"):
                share = np.where(weight > 0, residual / np.where(weight > 0, weight, 1), np.inf)
            bottleneck = int(np.argmin(share))
            inc = share[bottleneck]
            if not np.isfinite(inc):
                rate[~frozen] = np.inf  # flows on no capacity-limited link
                return rate
            # every unfrozen flow rises by inc; flows crossing a saturated link freeze
            residual -= inc * weight
            rate[~frozen] += inc
            saturated = np.zeros(self.n_links, dtype=bool)
            saturated[(weight > 0) & (residual <= 1e-9 * np.maximum(self.cap, 1))] = True
            hit = np.unique(self.flow_of[live & saturated[self.link_of]])
            frozen[hit] = True

    def completion_time(self, max_events: int = 10000, batch_tolerance: float = 0.02) -> float:
        """Seconds until every flow has delivered its bytes (rates recomputed as flows finish).

        Flows due within ``batch_tolerance`` of the next finish are treated as finishing together,
        which keeps the number of rate recomputations small (its error on the time is below that).
        """
        done_s = self.finish_times_s(max_events, batch_tolerance)
        return float(done_s.max()) if len(done_s) else 0.0

    def finish_times_s(self, max_events: int = 10000, batch_tolerance: float = 0.02) -> np.ndarray:
        """Seconds until each flow has delivered its bytes (inf for one that never can), rates
        recomputed as flows finish; batching as in ``completion_time``."""
        remaining = self.size.copy()
        finish = np.where(remaining > 0, np.inf, 0.0)
        active = remaining > 0
        t = 0.0
        for _ in range(max_events):
            if not active.any():
                return finish
            r = self.rates(active)
            with np.errstate(divide="ignore", invalid="ignore"):
                ttf = np.where(active & (r > 0), remaining / np.where(r > 0, r, 1), np.inf)
            dt = float(ttf.min())
            if not np.isfinite(dt):
                return finish
            step = dt * (1 + batch_tolerance)
            done = active & (ttf <= step)
            t += dt
            remaining = np.where(active, remaining - r * dt, 0)
            remaining[done] = 0
            now_active = remaining > 1e-6 * np.maximum(self.size, 1)
            finish[active & ~now_active] = t
            active = now_active
        finish[active] = t
        return finish


def drain_time(load: np.ndarray, cap: np.ndarray) -> float:
    """Time the busiest link needs to carry its bytes: the completion time when links stay busy."""
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(cap > 0, load / np.where(cap > 0, cap, 1), np.where(load > 0, np.inf, 0))
    return float(u.max())
