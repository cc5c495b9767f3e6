"""``c4 bench plan``: ECMP vs. the C4P plan vs. ideal spraying on a suite of fabrics, side by side."""

from __future__ import annotations

import argparse

HELP = "Traffic planning: max link load / bound and fluid completion for ECMP (mean over seeds), the plan and spraying."


def configure(parser: argparse.ArgumentParser) -> None:
    """Benchmark options."""
    parser.add_argument("--seeds", type=int, default=5, help="ECMP seeds to average (default 5)")
    parser.add_argument("--quick", action="store_true", help="only the small scenarios")


def scenarios(quick: bool):
    """(name, topology factory, jobs factory, plan max_qps, fail one spine link)."""
    from c4.traffic.collectives import Job
    from c4.traffic.generators import fat_tree, leaf_spine

    def ring(hosts, qps, channels=1, seed=1, name="j"):
        return [Job(name, [f"host{i}" for i in range(hosts)], shuffle_seed=seed, channels=channels, qps=qps)]

    out = []
    for q in (1, 2, 4, 8):
        out.append(
            (
                f"ring128_8leaf_16spine_{q}qp",
                lambda: leaf_spine(128, 8, 16, nics_per_host=1),
                lambda q=q: ring(128, q),
                q,
            )
        )
    out.append(
        (
            "4_jobs_interleaved",
            lambda: leaf_spine(128, 8, 16, nics_per_host=1),
            lambda: [
                Job(f"job{j}", [f"host{i}" for i in range(j, 128, 4)], shuffle_seed=j, channels=1, qps=1)
                for j in range(4)
            ],
            1,
        )
    )
    out.append(
        (
            "spine_link_failed",
            lambda: _failed(leaf_spine(128, 8, 16, nics_per_host=1)),
            lambda: ring(128, 1),
            16,
        )
    )
    out.append(
        (
            "oversubscribed_2to1",
            lambda: leaf_spine(128, 8, 8, nics_per_host=1, oversubscription=2.0),
            lambda: ring(128, 1),
            1,
        )
    )
    out.append(
        (
            "3_tier_fat_tree",
            lambda: fat_tree(pods=4, leaves_per_pod=4, aggs_per_pod=4, cores=8, hosts_per_leaf=4),
            lambda: ring(64, 1),
            4,
        )
    )
    if not quick:
        out.append(
            (
                "ring128x8nic_16ch_5qp_10k_pieces",
                lambda: leaf_spine(128, 8, 16, nics_per_host=8),
                lambda: ring(128, 5, channels=16),
                8,
            )
        )
        out.append(
            (
                "alltoall_1024gpu",
                lambda: leaf_spine(128, 8, 16, nics_per_host=2),
                lambda: [
                    Job(
                        "a2a",
                        [f"host{i}" for i in range(128)],
                        collective="alltoall",
                        channels=2,
                        message_bytes=1 << 30,
                    )
                ],
                1,
            )
        )
    return out


def _failed(topo):
    topo.set_state("leaf0", "spine0", "down")
    return topo


#: above this many subflows (in any of the three routings) completion is the busiest link's drain time
EXACT_LIMIT = 5000


def completion(cap, subflows, method: str = "max-min") -> tuple[float, str]:
    """Fluid completion time: max-min progressive filling, or the busiest link's drain time ("drain")."""
    from c4.traffic.fluid import FluidSim, drain_time
    from c4.traffic.routing import loads_from_fractions, loads_from_subflows

    if method == "max-min":
        return FluidSim(cap, subflows).completion_time(), "max-min"
    if subflows and isinstance(subflows[0][0], dict):
        return drain_time(loads_from_fractions(len(cap), subflows), cap), "drain"
    return drain_time(loads_from_subflows(len(cap), subflows), cap), "drain"


def run_scenario(name, make_topo, make_jobs, max_qps, seeds) -> dict:
    """All measurements of one scenario."""
    import statistics
    import time

    from c4.traffic.collectives import job_flows
    from c4.traffic.planner import Planner
    from c4.traffic.routing import (
        capacities,
        ecmp_subflows,
        loads_from_fractions,
        loads_from_subflows,
        lower_bound,
        max_utilization,
        spray_fractions,
    )

    topo = make_topo()
    flows = [f for job in make_jobs() for f in job_flows(job, topo)]
    cap = capacities(topo)
    bound = lower_bound(topo, flows)
    planner = Planner(topo, max_qps=max_qps)
    t0 = time.perf_counter()
    plan = planner.plan(flows)
    plan_s = time.perf_counter() - t0
    plan_over = plan.max_utilization() / bound
    ecmp = [ecmp_subflows(topo, flows, seed) for seed in range(seeds)]
    ecmp_over = [max_utilization(loads_from_subflows(len(cap), sf), cap) / bound for sf in ecmp]
    spray = spray_fractions(topo, flows)
    spray_over = max_utilization(loads_from_fractions(len(cap), spray), cap) / bound
    biggest = max(len(plan.pieces), len(spray), *(len(sf) for sf in ecmp))
    method = "max-min" if biggest <= EXACT_LIMIT else "drain"
    plan_ct = completion(cap, plan.subflows(), method)[0]
    ecmp_ct = statistics.mean(completion(cap, sf, method)[0] for sf in ecmp)
    spray_ct = completion(cap, spray, method)[0]
    # replanning after a spine link fails (on a fabric that had none failed)
    leaf = next(iter(topo.leaves))
    spine = next(s for s in topo.spines if topo.live(leaf, s))
    topo.set_state(leaf, spine, "down")
    t0 = time.perf_counter()
    planner.replan(plan)
    replan_s = time.perf_counter() - t0
    after = plan.max_utilization() / lower_bound(topo, flows)
    return {
        "name": name,
        "flows": len(flows),
        "pieces": len(plan.pieces),
        "ecmp_over_bound": round(statistics.mean(ecmp_over), 3),
        "plan_over_bound": round(plan_over, 3),
        "spray_over_bound": round(spray_over, 3),
        "ecmp_completion_over_plan": round(ecmp_ct / plan_ct, 3),
        "spray_completion_over_plan": round(spray_ct / plan_ct, 3),
        "completion": method,
        "plan_s": round(plan_s, 4),
        "replan_s": round(replan_s, 4),
        "replan_churn": plan.churn,
        "replan_over_bound": round(after, 3),
    }


def run(args: argparse.Namespace) -> int:
    """Run every scenario and print the table."""
    import sys

    from tqdm import tqdm

    from c4.report import emit

    suite = scenarios(args.quick)
    rows = []
    for name, make_topo, make_jobs, max_qps in tqdm(suite, desc="scenarios", disable=not sys.stdout.isatty()):
        rows.append(run_scenario(name, make_topo, make_jobs, max_qps, args.seeds))
    cols = [
        "name",
        "flows",
        "pieces",
        "ecmp_over_bound",
        "plan_over_bound",
        "spray_over_bound",
        "ecmp_completion_over_plan",
        "plan_s",
        "replan_s",
        "replan_churn",
        "completion",
    ]
    emit(
        "c4 bench plan: max link load / lower bound (1.00 = ideal spraying), fluid completion ECMP / plan",
        [{c: r[c] for c in cols} for r in rows],
        {"scenarios": rows},
        args.json,
    )
    return 0
