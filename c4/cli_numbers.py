"""Every numeric flag of every ``c4`` subcommand takes a finite number of at least 0.

No flag of C4 means anything by a negative count, size, duration or seed, and none by nan or inf; before
this check ``c4 sql --max-rows -5`` failed in pyarrow, ``--timeout-s nan`` as a gRPC deadline and ``c4 sim
--duration-s -5`` did nothing and exited 0. Flags whose 0 would divide or loop are refused by their
subcommand's own checks.
"""

from __future__ import annotations

import argparse
import math


def whole_number(text: str) -> int:
    """An int flag's value: a whole number of at least 0 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: give 0 or more")
    return value


def real_number(text: str) -> float:
    """A float flag's value: a finite number of at least 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative: give 0 or more")
    return value


def at_least_one(text: str) -> int:
    """A count that must be 1 or more (argparse type): streams, rows, batches."""
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError("0: give 1 or more")
    return value


def guard_numbers(parser: argparse.ArgumentParser) -> None:
    """Give every plain ``int``/``float`` flag of ``parser`` and its subcommands the checks above."""
    for action in parser._actions:  # argparse keeps no public list of a parser's actions
        if action.type is int:
            action.type = whole_number
        elif action.type is float:
            action.type = real_number
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                guard_numbers(sub)
