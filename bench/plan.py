"""``c4 bench plan``: ECMP vs. the C4P plan vs. ideal spraying on a suite of fabrics, side by side.

Per scenario: the plan's max link load over the lower bound, its pieces (QPs) beside the fewest
pieces found to reach the same load, the connections whose pieces stock NCCL's even split over
QPs and NIC ports cannot carry (``uneven_connections``: they need weighted QPs), and ECMP as a
mean with a 95% interval over (hash seed, ring shuffle) samples. A later row, ``rank_order`` (plain ECMP with the planned host order vs a
random order), belongs beside ``ecmp_ci`` in ``run_scenario``'s result.
"""

from __future__ import annotations

import argparse

HELP = (
    "Traffic planning: max link load / bound and fluid completion for ECMP (mean and 95%% interval over "
    "seeds and shuffles), the plan (pieces vs the fewest found) and spraying."
)

#: most ECMP (hash seed, ring shuffle) samples per scenario; sampling stops earlier once the interval is narrow
DEFAULT_SAMPLES = 400
#: the same with --quick (the interval may then stay wider than --ci-pct; its width is reported)
QUICK_SAMPLES = 60
#: fewest ECMP samples before the interval may stop the sampling
MIN_SAMPLES = 10
#: sampling stops when the 95% half-width is within this percentage of the mean
DEFAULT_CI_PCT = 3.0
#: ECMP / plan fluid completion is averaged over the first this many (seed, shuffle) samples (max-min is costly)
COMPLETION_SAMPLES = 8
#: the same with --quick
QUICK_COMPLETION_SAMPLES = 4
#: (hash seed, host shuffle) samples of the rank_order row
RANK_ORDER_SAMPLES = 20


def configure(parser: argparse.ArgumentParser) -> None:
    """Benchmark options."""
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"most ECMP samples (hash seed i with ring shuffle i) per scenario "
        f"(default {DEFAULT_SAMPLES}, {QUICK_SAMPLES} with --quick)",
    )
    parser.add_argument(
        "--ci-pct",
        type=float,
        default=DEFAULT_CI_PCT,
        help=f"stop sampling ECMP once the 95%% half-width is within this %% of the mean "
        f"(after {MIN_SAMPLES} samples; default {DEFAULT_CI_PCT})",
    )
    parser.add_argument("--quick", action="store_true", help="only the small scenarios")


def scenarios(quick: bool):
    """(name, topology factory, jobs factory taking a shuffle index (0 = the scenario's own order), plan max_qps)."""
    from c4.traffic.collectives import Job
    from c4.traffic.generators import fat_tree, leaf_spine, rail_optimized

    def ring(hosts, qps, channels=1, seed=1, name="j"):
        return lambda shuffle=0: [
            Job(
                name,
                [f"host{i}" for i in range(hosts)],
                shuffle_seed=seed + shuffle,
                channels=channels,
                qps=qps,
            )
        ]

    def ring128():
        return leaf_spine(128, 8, 16, nics_per_host=1)

    out = [(f"ring128_8leaf_16spine_{q}qp", ring128, ring(128, q), q) for q in (1, 2, 4, 8)]
    # the same 1-QP ring allowed 8 QPs per connection: one piece per connection already reaches the bound
    out.append(("ring128_1qp_max8qp", ring128, ring(128, 1), 8))
    out.append(
        (
            "4_jobs_interleaved",
            ring128,
            lambda shuffle=0: [
                Job(
                    f"job{j}",
                    [f"host{i}" for i in range(j, 128, 4)],
                    shuffle_seed=j + 4 * shuffle,
                    channels=1,
                    qps=1,
                )
                for j in range(4)
            ],
            1,
        )
    )
    out.append(("spine_link_failed", lambda: _failed(ring128()), ring(128, 1), 16))
    # rail-optimized dual-plane (deploy/examples/topology-rail.yaml) with two links down on one rail's
    # plane-0 leaves: pieces and ports must follow each NIC port's own leaf (issue 20)
    out.append(
        (
            "dual_plane_2_links_down",
            lambda: _failed(
                rail_optimized(hosts=16, groups=2, spines=8, rails=4, ports_per_nic=2, dual_plane=True),
                ("leaf0", "spine0"),
                ("leaf8", "spine0"),
            ),
            ring(16, 1, channels=4, seed=1),
            8,
        )
    )
    out.append(
        (
            "oversubscribed_2to1",
            lambda: leaf_spine(128, 8, 8, nics_per_host=1, oversubscription=2.0),
            ring(128, 1),
            1,
        )
    )
    out.append(
        (
            "3_tier_fat_tree",
            lambda: fat_tree(pods=4, leaves_per_pod=4, aggs_per_pod=4, cores=8, hosts_per_leaf=4),
            ring(64, 1),
            4,
        )
    )
    if not quick:
        # issue 20's 1.875x case: 2 hosts per leaf, every link tight at the bound, a link down in
        # each plane (an LP with unlimited splitting reaches 1.023; 8 QPs per connection are not enough here)
        out.append(
            (
                "dual_plane_tight_2_links_down",
                lambda: _failed(
                    rail_optimized(hosts=8, groups=4, spines=16, rails=1, ports_per_nic=2, dual_plane=True),
                    ("leaf3", "spine13"),
                    ("leaf6", "spine10"),
                ),
                lambda shuffle=0: [
                    Job("j", [f"host{i}" for i in range(8)], shuffle_seed=15 + shuffle, channels=2, qps=2)
                ],
                8,
            )
        )
        out.append(
            (
                "ring128x8nic_16ch_5qp",
                lambda: leaf_spine(128, 8, 16, nics_per_host=8),
                ring(128, 5, channels=16),
                8,
            )
        )
        out.append(
            (
                "alltoall_1024gpu",
                lambda: leaf_spine(128, 8, 16, nics_per_host=2),
                lambda shuffle=0: [
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


def _failed(topo, *cables):
    """The fabric with the given leaf-spine cables down (default leaf0-spine0)."""
    for a, b in cables or (("leaf0", "spine0"),):
        topo.set_state(a, b, "down")
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


def fewest_pieces(topo, flows, max_qps: int, load_s: float) -> int | None:
    """The fewest pieces among plans allowed 1..max_qps QPs per connection that reach load_s (seconds)."""
    from c4.traffic.planner import Planner

    counts = []
    for m in range(1, max_qps + 1):
        plan = Planner(topo, max_qps=m).plan(flows, sports=False)
        if plan.max_utilization() <= load_s * (1 + 1e-9):
            counts.append(len(plan.pieces))
    return min(counts) if counts else None


def sample_flows(topo, make_jobs, flows, i: int):
    """The flows of ring shuffle i (0: the scenario's own flows)."""
    from c4.traffic.collectives import job_flows

    return flows if i == 0 else [f for job in make_jobs(i) for f in job_flows(job, topo)]


def ecmp_samples(topo, make_jobs, flows, bound: float, samples: int, ci_pct: float) -> list[float]:
    """ECMP max link load / bound for hash seed i with ring shuffle i (0 = the scenario's own flows).

    Up to ``samples`` of them; stops once at least MIN_SAMPLES give a 95% half-width within
    ci_pct percent of the mean.
    """
    from c4.bench.interval import mean_ci95
    from c4.traffic.routing import (
        capacities,
        ecmp_subflows,
        loads_from_subflows,
        lower_bound,
        max_utilization,
    )

    cap = capacities(topo)
    out = []
    for i in range(samples):
        fl = sample_flows(topo, make_jobs, flows, i)
        b = bound if fl == flows else lower_bound(topo, fl)
        out.append(max_utilization(loads_from_subflows(len(cap), ecmp_subflows(topo, fl, i)), cap) / b)
        if len(out) >= MIN_SAMPLES:
            mean, _, hi = mean_ci95(out)
            if hi - mean <= ci_pct / 100 * mean:
                break
    return out


def completion_ratios(topo, make_jobs, flows, plan, max_qps: int, samples: int, method: str) -> list[float]:
    """ECMP fluid completion / the plan's for hash seed i with ring shuffle i, each shuffle planned anew."""
    from c4.traffic.planner import Planner
    from c4.traffic.routing import capacities, ecmp_subflows

    cap = capacities(topo)
    out = []
    for i in range(samples):
        fl = sample_flows(topo, make_jobs, flows, i)
        pl = plan if fl == flows else Planner(topo, max_qps=max_qps).plan(fl, sports=False)
        ecmp_ct = completion(cap, ecmp_subflows(topo, fl, i), method)[0]
        out.append(ecmp_ct / completion(cap, pl.subflows(), method)[0])
    return out


def run_scenario(
    name,
    make_topo,
    make_jobs,
    max_qps,
    seeds,
    ci_pct: float = DEFAULT_CI_PCT,
    completion_samples: int = COMPLETION_SAMPLES,
) -> dict:
    """All measurements of one scenario."""
    import time

    from c4.bench.interval import mean_ci95
    from c4.traffic.collectives import job_flows
    from c4.traffic.even_split import uneven_connections
    from c4.traffic.planner import Planner
    from c4.traffic.routing import (
        capacities,
        loads_from_fractions,
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
    plan_load = plan.max_utilization()
    pieces = len(plan.pieces)
    uneven = len(uneven_connections(plan))
    fewest = fewest_pieces(topo, flows, max_qps, plan_load) or pieces
    ecmp_over = ecmp_samples(topo, make_jobs, flows, bound, max(1, seeds), ci_pct)
    ecmp_mean, ecmp_lo, ecmp_hi = mean_ci95(ecmp_over)
    spray = spray_fractions(topo, flows)
    spray_over = max_utilization(loads_from_fractions(len(cap), spray), cap) / bound
    ecmp_qps = sum(f.qps for f in flows)
    method = "max-min" if max(pieces, len(spray), ecmp_qps) <= EXACT_LIMIT else "drain"
    plan_ct = completion(cap, plan.subflows(), method)[0]
    spray_ct = completion(cap, spray, method)[0]
    ct_over = completion_ratios(
        topo, make_jobs, flows, plan, max_qps, min(len(ecmp_over), completion_samples), method
    )
    ct_mean, ct_lo, ct_hi = mean_ci95(ct_over)
    # replanning after a spine link fails (on a fabric that had none failed)
    leaf = next(iter(topo.leaves))
    spine = next(s for s in topo.spines if topo.live(leaf, s))
    topo.set_state(leaf, spine, "down")
    t0 = time.perf_counter()
    planner.replan(plan)
    replan_s = time.perf_counter() - t0
    after = plan.max_utilization() / lower_bound(topo, flows)
    rank_order = rank_order_row(make_topo, make_jobs, RANK_ORDER_SAMPLES, method)
    return {
        "name": name,
        "flows": len(flows),
        "pieces": pieces,
        "fewest_pieces": fewest,
        "min_pieces_at_bound": round(pieces / fewest, 3),
        "uneven_connections": uneven,
        "ecmp_over_bound": round(ecmp_mean, 3),
        "ecmp_ci": [round(ecmp_lo, 3), round(ecmp_hi, 3)],
        "ecmp_samples": len(ecmp_over),
        "ecmp_ci_half_pct": round(100 * (ecmp_hi - ecmp_mean) / ecmp_mean, 2),
        "plan_over_bound": round(plan_load / bound, 3),
        "spray_over_bound": round(spray_over, 3),
        "ecmp_completion_over_plan": round(ct_mean, 3),
        "ecmp_completion_ci": [round(ct_lo, 3), round(ct_hi, 3)],
        "ecmp_completion_samples": len(ct_over),
        "spray_completion_over_plan": round(spray_ct / plan_ct, 3),
        "completion": method,
        "plan_s": round(plan_s, 4),
        "replan_s": round(replan_s, 4),
        "replan_churn": plan.churn,
        "replan_over_bound": round(after, 3),
        "rank_order": rank_order,
    }


def run(args: argparse.Namespace) -> int:
    """Run every scenario and print the table."""
    import sys

    from tqdm import tqdm

    from c4.report import emit

    if args.seeds is not None and args.seeds < 1:
        print(f"c4 bench plan: --seeds must be >= 1, got {args.seeds}", file=sys.stderr)
        return 2
    suite = scenarios(args.quick)
    samples = args.seeds or (QUICK_SAMPLES if args.quick else DEFAULT_SAMPLES)
    rows = []
    for name, make_topo, make_jobs, max_qps in tqdm(suite, desc="scenarios", disable=not sys.stdout.isatty()):
        rows.append(
            run_scenario(
                name,
                make_topo,
                make_jobs,
                max_qps,
                samples,
                args.ci_pct,
                QUICK_COMPLETION_SAMPLES if args.quick else COMPLETION_SAMPLES,
            )
        )
    cols = [
        "name",
        "flows",
        "pieces",
        "min_pieces_at_bound",
        "uneven_connections",
        "ecmp_over_bound",
        "ecmp_ci",
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


def rank_order_row(make_topo, make_jobs, seeds: int, method: str = "drain") -> dict:
    """Plain ECMP with the planned host order vs a random order: max load / bound and completion, means over seeds.

    Sample i: the jobs' hosts shuffled with random.Random(1000 + i) (random order) or placed by leaf
    (traffic/apply/order.py), both routed by ECMP hash seed i. Ratios above 1 mean the planned
    order helps ECMP.
    """
    import dataclasses
    import random

    from c4.bench.interval import mean_ci95
    from c4.traffic.apply.order import planned_order
    from c4.traffic.collectives import job_flows
    from c4.traffic.routing import (
        capacities,
        ecmp_subflows,
        loads_from_subflows,
        lower_bound,
        max_utilization,
    )

    topo = make_topo()
    cap = capacities(topo)
    base = make_jobs()
    placed = [dataclasses.replace(j, hosts=planned_order(topo, j.hosts), shuffle_seed=None) for j in base]
    placed_flows = [f for j in placed for f in job_flows(j, topo)]
    bound = lower_bound(topo, placed_flows)
    rnd_load, pl_load, ct_ratio = [], [], []
    for i in range(max(1, seeds)):
        shuffled = []
        for j in base:
            hosts = list(j.hosts)
            random.Random(1000 + i).shuffle(hosts)
            shuffled.append(dataclasses.replace(j, hosts=hosts, shuffle_seed=None))
        rnd_flows = [f for j in shuffled for f in job_flows(j, topo)]
        rnd_sub = ecmp_subflows(topo, rnd_flows, i)
        pl_sub = ecmp_subflows(topo, placed_flows, i)
        rnd_load.append(max_utilization(loads_from_subflows(len(cap), rnd_sub), cap) / bound)
        pl_load.append(max_utilization(loads_from_subflows(len(cap), pl_sub), cap) / bound)
        ct_ratio.append(completion(cap, rnd_sub, method)[0] / completion(cap, pl_sub, method)[0])
    r_mean, r_lo, r_hi = mean_ci95(rnd_load)
    p_mean, p_lo, p_hi = mean_ci95(pl_load)
    c_mean, c_lo, c_hi = mean_ci95(ct_ratio)
    return {
        "samples": len(rnd_load),
        "random_ecmp_over_bound": round(r_mean, 3),
        "random_ecmp_ci": [round(r_lo, 3), round(r_hi, 3)],
        "placed_ecmp_over_bound": round(p_mean, 3),
        "placed_ecmp_ci": [round(p_lo, 3), round(p_hi, 3)],
        "random_over_placed_ecmp": round(r_mean / p_mean, 3),
        "random_completion_over_placed": round(c_mean, 3),
        "random_completion_ci": [round(c_lo, 3), round(c_hi, 3)],
        "completion": method,
    }
