"""The mean of benchmark samples with a two-sided 95% confidence interval (Student's t)."""

from __future__ import annotations

import math
import statistics

#: two-sided 95% Student t quantiles t(0.975, df) for df = 1..30; above 30 the normal 1.96 is used
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with df degrees of freedom (1.96 above 30)."""
    if df < 1:
        raise ValueError(f"a t quantile needs df >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci95(samples: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% interval of the mean; one sample gives a zero-width interval."""
    if not samples:
        raise ValueError("a confidence interval needs at least one sample")
    mean = statistics.fmean(samples)
    if len(samples) == 1:
        return mean, mean, mean
    half = t975(len(samples) - 1) * statistics.stdev(samples) / math.sqrt(len(samples))
    return mean, mean - half, mean + half
