"""``c4 bench downtime``: a large job's error-induced downtime under published fault rates, three recovery policies."""

from __future__ import annotations

import argparse

HELP = (
    "Downtime fraction and ETTR of one long job (default 16,384 GPUs, 30 days) under Llama 3's published fault "
    "rates: framework default vs NCCL RAS + Flight Recorder vs C4 with its time to detect measured by "
    "`c4 bench diagnose`, beside C4's published figures."
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Job size, recovery times (each default with its source in the help) and the diagnose result to read."""
    parser.add_argument(
        "--gpus", type=int, default=16_384, help="GPUs of the job (default 16,384, as Llama 3)"
    )
    parser.add_argument("--days", type=float, default=30.0, help="wall time of the job in days (default 30)")
    parser.add_argument("--seeds", type=int, default=200, help="Monte-Carlo runs, one fault sequence each")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument(
        "--checkpoint-min",
        type=float,
        default=60.0,
        help="checkpoint interval in minutes (default 60: Huawei MindCluster's 'saved once an hour')",
    )
    parser.add_argument(
        "--restart-min",
        type=float,
        default=10.0,
        help="re-scheduling + job init + checkpoint load, the same for every policy (default 10: an assumption, "
        "no published figure for a 16k-GPU restart was found)",
    )
    parser.add_argument(
        "--watchdog-min",
        type=float,
        default=10.0,
        help="collective watchdog timeout (default 10: PyTorch kProcessGroupNCCLDefaultTimeout)",
    )
    parser.add_argument(
        "--manual-diagnosis-h",
        type=float,
        default=1.0,
        help="operators find and drain the faulty part by hand (default 1: the low end of the C4 paper's "
        "'hours to days')",
    )
    parser.add_argument(
        "--ras-localize-min",
        type=float,
        default=15.0,
        help="operators read NCCL RAS / Flight Recorder's named rank and drain it (default 15: an assumption)",
    )
    parser.add_argument(
        "--c4-isolate-s",
        type=float,
        default=30.0,
        help="C4's automatic drain after its finding (default 30: an assumption)",
    )
    parser.add_argument(
        "--fail-slow-per-1000-gpu-day",
        type=float,
        default=0.0,
        help="fail-slow faults per 1,000 GPUs per day (default 0: no published rate per GPU was found; Falcon "
        "reports their durations, not a rate)",
    )
    parser.add_argument(
        "--fail-slow-factor",
        type=float,
        default=2.0,
        help="step time multiplier during a fail-slow (default 2)",
    )
    parser.add_argument(
        "--fail-slow-notice-h",
        type=float,
        default=24.0,
        help="running hours until a fail-slow is noticed without C4 (default 24: Fail-Slow at Scale, FAST'18: "
        "most incidents took hours to months to pinpoint)",
    )
    parser.add_argument(
        "--diagnose-json",
        default="",
        help="a `c4 bench diagnose --json` output (its last JSON line) to read C4's time to detect per kind from; "
        "without it `c4 bench diagnose --quick --json` runs in-process (a few minutes)",
    )
    parser.add_argument(
        "--ttd",
        choices=("p50", "p90"),
        default="p50",
        help="which measured time to detect to use (default p50)",
    )


def run(args: argparse.Namespace) -> int:
    """Check the options, get C4's measured time to detect, run the model and print the table (and the JSON)."""
    import json
    import sys

    from c4.bench.downtime_report import BadInput, check_args, diagnose_result, model, printable

    try:
        check_args(args)
        ttd_origin, diagnose = diagnose_result(args.diagnose_json)
    except BadInput as exc:
        print(f"c4 bench downtime: {exc}", file=sys.stderr)
        return 2
    result = model(args, diagnose, ttd_origin)
    print(printable(result))
    if args.json:
        print(json.dumps(result, default=float))
    return 0
