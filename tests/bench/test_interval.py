"""bench.interval: the mean with a 95% Student-t interval, as `c4 bench plan` reports ECMP."""

from __future__ import annotations

import math

import pytest

from c4.bench.interval import mean_ci95, t975


def test_interval_of_known_samples():
    mean, lo, hi = mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) * sd / sqrt(n)
    assert mean == 3.0
    assert (lo, hi) == pytest.approx((3.0 - half, 3.0 + half))


def test_quantiles_shrink_to_the_normal():
    assert t975(1) == 12.706 and t975(30) == 2.042 and t975(31) == 1.96
    assert all(t975(d) > t975(d + 1) for d in range(1, 30))


def test_degenerate_and_bad_input():
    assert mean_ci95([2.5]) == (2.5, 2.5, 2.5)
    assert mean_ci95([4.0, 4.0, 4.0]) == (4.0, 4.0, 4.0)
    with pytest.raises(ValueError, match="at least one sample"):
        mean_ci95([])
    with pytest.raises(ValueError, match="df >= 1"):
        t975(0)
