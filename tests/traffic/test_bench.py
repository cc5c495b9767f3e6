"""`c4 bench plan --quick --json`: the last line is one JSON object with the scenario ratios, pieces and ECMP intervals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SAMPLES = 12


def test_bench_plan_quick_json():
    proc = subprocess.run(
        [sys.executable, "-m", "c4.cli", "bench", "plan", "--quick", "--json", "--seeds", str(SAMPLES)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout.strip().splitlines()[-1])["scenarios"]
    names = {r["name"] for r in rows}
    assert {
        "ring128_8leaf_16spine_1qp",
        "ring128_1qp_max8qp",
        "4_jobs_interleaved",
        "spine_link_failed",
        "dual_plane_2_links_down",
        "oversubscribed_2to1",
    } <= names
    for r in rows:
        assert {"ecmp_over_bound", "plan_over_bound", "spray_over_bound", "ecmp_completion_over_plan"} <= set(
            r
        )
        assert r["plan_over_bound"] >= 1.0 - 1e-9 and r["plan_over_bound"] <= r["ecmp_over_bound"] + 1e-9
        assert r["plan_over_bound"] <= 1.05, r
        assert r["plan_s"] > 0 and r["replan_s"] > 0
        # pieces beside the fewest found at the same load
        assert r["pieces"] >= r["flows"] and r["fewest_pieces"] <= r["pieces"]
        assert r["min_pieces_at_bound"] == round(r["pieces"] / r["fewest_pieces"], 3) <= 1.25
        # every --quick scenario reaches the bound with pieces stock NCCL's even split carries
        assert r["uneven_connections"] == 0
        # ECMP: mean inside its 95% interval, over at most SAMPLES (seed, shuffle) samples
        lo, hi = r["ecmp_ci"]
        assert 10 <= r["ecmp_samples"] <= SAMPLES  # at least 10 before the interval may stop sampling
        assert lo <= r["ecmp_over_bound"] <= hi and lo < hi
        half_pct = 100 * (hi - r["ecmp_over_bound"]) / r["ecmp_over_bound"]
        assert r["ecmp_ci_half_pct"] == pytest.approx(half_pct, abs=0.1)
        # fluid completion ECMP / plan: the first (seed, shuffle) samples, each shuffle planned anew
        lo, hi = r["ecmp_completion_ci"]
        assert r["ecmp_completion_samples"] == 4  # --quick
        assert lo <= r["ecmp_completion_over_plan"] <= hi
    by = {r["name"]: r for r in rows}
    assert by["ring128_8leaf_16spine_1qp"]["plan_over_bound"] == 1.0
    assert by["ring128_8leaf_16spine_1qp"]["ecmp_over_bound"] > 2.5
    assert by["ring128_8leaf_16spine_1qp"]["ecmp_completion_over_plan"] >= 2.5
    assert by["ring128_1qp_max8qp"]["pieces"] == 128  # one QP per connection reaches the bound


def test_bench_plan_rejects_zero_samples():
    proc = subprocess.run(
        [sys.executable, "-m", "c4.cli", "bench", "plan", "--quick", "--seeds", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--seeds must be >= 1" in proc.stderr
