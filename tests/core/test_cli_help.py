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
