"""`c4 bench plan --quick --json`: the last line is one JSON object with the scenario ratios."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_plan_quick_json():
    proc = subprocess.run(
        [sys.executable, "-m", "c4.cli", "bench", "plan", "--quick", "--json", "--seeds", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout.strip().splitlines()[-1])["scenarios"]
    names = {r["name"] for r in rows}
    assert {
        "ring128_8leaf_16spine_1qp",
        "4_jobs_interleaved",
        "spine_link_failed",
        "oversubscribed_2to1",
    } <= names
    for r in rows:
        assert {"ecmp_over_bound", "plan_over_bound", "spray_over_bound", "ecmp_completion_over_plan"} <= set(
            r
        )
        assert r["plan_over_bound"] >= 1.0 - 1e-9 and r["plan_over_bound"] <= r["ecmp_over_bound"] + 1e-9
        assert r["plan_s"] > 0 and r["replan_s"] > 0
    by = {r["name"]: r for r in rows}
    assert by["ring128_8leaf_16spine_1qp"]["plan_over_bound"] == 1.0
    assert by["ring128_8leaf_16spine_1qp"]["ecmp_over_bound"] > 2.5
