"""``c4 plan``: plan jobs onto a fabric, print loads vs. the bound and ECMP, write the plan as JSON."""

from __future__ import annotations

import argparse
import sys

HELP = "C4P: plan every connection's path, NIC port and UDP source port; compare with ECMP and the spraying bound."


def configure(parser: argparse.ArgumentParser) -> None:
    """plan flags."""
    parser.add_argument("--topology", required=True, help="fabric YAML (see deploy/examples/topology-*.yaml)")
    parser.add_argument("--job", required=True, help="jobs YAML (see deploy/examples/job-ring.yaml)")
    parser.add_argument(
        "--max-qps", type=int, default=8, help="most pieces (QPs) a connection may be split into"
    )
    parser.add_argument("--out", default="plan.json", help="where to write the plan (JSON)")
    parser.add_argument("--links", type=int, default=10, help="busiest links to list")
    parser.add_argument("--collector", help="also store the plan in the collector's plans table (HOST:PORT)")
    parser.add_argument("--seeds", type=int, default=5, help="ECMP seeds to average")
    parser.add_argument(
        "--apply-as",
        action="append",
        default=[],
        metavar="FORMAT",
        help="also write the plan for stock stacks (repeatable or comma list): "
        "hostfile, slurm, torchrun, k8s, nccl-env, sport-table, switch-routes (see docs/apply.md)",
    )
    parser.add_argument("--apply-dir", help="existing directory the --apply-as files go to")
    parser.add_argument(
        "--adaptive-routing",
        choices=("on", "off"),
        help="nccl-env: whether the fabric does adaptive routing (unset: NCCL's default is kept)",
    )
    parser.add_argument(
        "--placed",
        action="store_true",
        help="plan every job in the topology-aware host order (the order --apply-as hostfile/slurm/torchrun emit)",
    )


def _say(*parts: object) -> None:
    """print to stdout; once the reader went away (``c4 plan | head``), later output goes to /dev/null."""
    import os

    try:
        print(*parts, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _writable_file(path: str, flag: str) -> None:
    """ApplyError unless path can be written as a file (not a directory, in an existing writable directory)."""
    import os

    from c4.traffic.apply.writer import ApplyError

    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ApplyError(f"{flag} {path}: is a directory; give a file name")
    if not os.path.isdir(parent):
        raise ApplyError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ApplyError(f"{flag} {path}: not writable")


def check_args(args: argparse.Namespace) -> list[str]:
    """The --apply-as formats after checking every flag; ApplyError names the bad flag."""
    import os

    from c4.traffic.apply.writer import ApplyError, parse_formats
    from c4.traffic.collectives import MAX_QPS

    formats = parse_formats(args.apply_as)
    if args.apply_as and not formats:
        raise ApplyError(f"--apply-as {','.join(args.apply_as)!r}: names no format")
    if formats and not args.apply_dir:
        raise ApplyError("--apply-as needs --apply-dir DIR")
    if args.apply_dir and not formats:
        raise ApplyError("--apply-dir needs --apply-as FORMAT")
    if args.apply_dir and not os.path.isdir(args.apply_dir):
        raise ApplyError(f"--apply-dir {args.apply_dir}: not an existing directory")
    if args.apply_dir and not os.access(args.apply_dir, os.W_OK | os.X_OK):
        raise ApplyError(f"--apply-dir {args.apply_dir}: not writable")
    if args.seeds < 1:
        raise ApplyError(f"--seeds must be >= 1, got {args.seeds}")
    if not 1 <= args.max_qps <= MAX_QPS:
        raise ApplyError(
            f"--max-qps must be in 1..{MAX_QPS} (NCCL_IB_QPS_PER_CONNECTION's range), got {args.max_qps}"
        )
    if args.links < 0:
        raise ApplyError(f"--links must be >= 0, got {args.links}")
    _writable_file(args.out, "--out")
    return formats


def run(args: argparse.Namespace) -> int:
    """Plan, compare, write."""
    import json
    import os
    import statistics
    import time
    import uuid

    import numpy as np

    from c4.report import format_table
    from c4.traffic.apply.order import planned_order
    from c4.traffic.apply.writer import ApplyError, file_stems, write_apply
    from c4.traffic.collectives import fit_jobs, job_flows, load_job_yaml
    from c4.traffic.export import link_table, plan_rows, plan_run_row, plan_run_table, plan_table
    from c4.traffic.planner import Planner
    from c4.traffic.routing import (
        capacities,
        ecmp_subflows,
        loads_from_subflows,
        lower_bound,
        max_utilization,
    )
    from c4.traffic.topology import TopologyError, load_yaml

    try:
        formats = check_args(args)
        topo = load_yaml(args.topology)
        jobs = load_job_yaml(args.job)
        fit_jobs(jobs, topo, args.job)
        if formats:
            file_stems(jobs)
        if args.placed:
            for job in jobs:
                job.hosts, job.shuffle_seed = planned_order(topo, job.hosts), None
        flows = [f for j in jobs for f in job_flows(j, topo)]
        t0 = time.perf_counter()
        plan = Planner(topo, max_qps=args.max_qps).plan(flows)
        plan_s = time.perf_counter() - t0
    except (ApplyError, TopologyError) as exc:
        print(f"c4 plan: {exc}", file=sys.stderr)
        return 2
    cap = capacities(topo)
    bound = lower_bound(topo, flows)
    plan_over = plan.max_utilization() / bound
    ecmp = statistics.mean(
        max_utilization(loads_from_subflows(len(cap), ecmp_subflows(topo, flows, s)), cap) / bound
        for s in range(args.seeds)
    )
    _say(
        f"fabric {topo.name}: {len(topo.hosts)} hosts, {len(topo.leaves)} leaves, {len(topo.spines)} spines; "
        f"{len(jobs)} jobs, {len(flows)} connections -> {len(plan.pieces)} pieces (planned in {plan_s:.3f} s)"
    )
    _say(
        f"max link load / spraying bound: plan {plan_over:.3f}   ECMP {ecmp:.3f} (mean of {args.seeds} seeds)   "
        f"bound {bound * 1e3:.3f} ms per collective"
    )
    util = plan.load / np.where(cap > 0, cap, np.inf)
    top = np.argsort(-util)[: args.links]
    _say(
        format_table(
            [
                {
                    "link": topo.links[i].name,
                    "load_gb": plan.load[i] / 1e9,
                    "capacity_gbps": topo.links[i].usable_gbps,
                    "busy_ms": util[i] * 1e3,
                    "over_bound": util[i] / bound,
                }
                for i in top
            ]
        )
    )
    plan_id = f"plan-{uuid.uuid4().hex[:8]}"
    rows = plan_rows(plan, plan_id, plan_over)
    doc = {
        "plan_id": plan_id,
        "topology": topo.name,
        "plan_over_bound": plan_over,
        "ecmp_over_bound": ecmp,
        "pieces": [{k: v for k, v in r.items() if k not in ("ts", "node")} for r in rows],
    }
    try:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    except OSError as exc:
        print(f"c4 plan: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    _say(f"wrote {args.out} ({len(rows)} pieces, plan id {plan_id})")
    if formats:
        ar = None if args.adaptive_routing is None else args.adaptive_routing == "on"
        try:
            paths = write_apply(formats, args.apply_dir, plan, plan_id, jobs, ar)
        except ApplyError as exc:
            print(f"c4 plan: {exc}", file=sys.stderr)
            return 2
        _say(f"wrote {len(paths)} files for {', '.join(formats)} to {args.apply_dir}")
    if args.collector:
        from c4.push import PushError, push_table
        from c4.query import QueryError
        from c4.traffic.previous import latest_plan

        job = "+".join(j.name for j in jobs)
        try:
            previous = latest_plan(args.collector, job, [j.name for j in jobs])
        except QueryError as exc:  # e.g. no reader token: the plan is stored without its predecessor
            _say(f"c4 plan: could not read the job's previous plan ({exc}); storing it as manual")
            previous, reason = None, "manual"
        else:
            reason = "manual" if previous else "initial"
        run_row = plan_run_row(
            plan,
            plan_id,
            job,
            reason,
            previous_plan_id=previous.plan_id if previous else "",
            previous_routes=previous.routes if previous else None,
            applied=", ".join(f"{f}:{os.path.abspath(args.apply_dir)}" for f in formats),
            ecmp_seeds=args.seeds,
        )
        try:
            n = push_table(args.collector, "plans", plan_table(plan, plan_id, plan_over), agent_id="c4-plan")
            links = push_table(
                args.collector, "plan_links", link_table(plan, plan_id, args.seeds), agent_id="c4-plan"
            )
            push_table(args.collector, "plan_runs", plan_run_table(run_row), agent_id="c4-plan")
        except PushError as exc:
            print(f"c4 plan: {exc}", file=sys.stderr)
            return 1
        since = f", replacing {previous.plan_id} ({run_row['moved_pieces']} pieces moved)" if previous else ""
        _say(
            f"stored {n} rows in the collector's plans table and {links} in plan_links; "
            f"plan_runs: {reason} plan of job {job}{since}"
        )
    return 0
