"""Every command's and subcommand's ``--help`` renders: a bare ``%`` in a help text made argparse raise on
``c4 bench --help`` (the plan benchmark's "95% interval"), a traceback where a user asked for help."""

from __future__ import annotations

import argparse

import pytest

from c4.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``parser`` and every subparser below it, with the words that reach each."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_help_text_renders():
    seen = 0
    for path, parser in _parsers(build_parser()):
        text = parser.format_help()
        assert text.startswith("usage:"), path
        seen += 1
    assert seen > 20  # the walk reached the subcommands (bench, store, ...), not the top alone


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"], ["diagnose", "--help"]])
def test_help_exits_cleanly(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_no_numeric_flag_takes_a_negative_or_infinite_number(capsys):
    """Every int/float flag of every command is checked (c4.cli_numbers): ``c4 sql --max-rows -5`` failed in
    pyarrow, ``--timeout-s nan`` as a gRPC deadline, ``c4 sim --duration-s -5`` exited 0 having done nothing."""
    numeric = 0
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            assert action.type not in (int, float), (path, action.option_strings)
            numeric += action.type is not None and action.type.__name__ in ("whole_number", "real_number")
    assert numeric > 50  # the walk reached the benchmarks' flags
    for argv, words in [
        (["sql", "--max-rows", "-5", "SELECT 1"], "argument --max-rows: -5 is negative: give 0 or more"),
        (["sql", "--timeout-s", "nan", "SELECT 1"], "argument --timeout-s: 'nan' is not a finite number"),
        (["sql", "--timeout-s", "1e400", "SELECT 1"], "argument --timeout-s: '1e400' is not a finite number"),
        (["sim", "--duration-s", "-5"], "argument --duration-s: -5 is negative: give 0 or more"),
        (["bench", "ingest", "--streams", "0"], "argument --streams: 0: give 1 or more"),
        (["bench", "plugin", "--ops", "0"], "argument --ops: 0: give 1 or more"),  # was a JSONDecodeError
        (["bench", "plugin", "--rounds", "0"], "argument --rounds: 0: give 1 or more"),  # no median
        (["bench", "ui", "--nodes", "0"], "argument --nodes: 0: give 1 or more"),  # an ArrowTypeError
        (["bench", "load", "--agents", "x"], "argument --agents: 'x' is not a whole number"),
    ]:
        assert main(argv) == 2, argv
        assert words in capsys.readouterr().err, argv
