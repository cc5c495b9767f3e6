"""`c4 faults` argument handling that needs no collector."""

from __future__ import annotations


def test_faults_actions_take_the_collector_after_the_action_too(capsys):
    """`c4 faults hold --collector X` reaches X (it was 'unrecognized arguments')."""
    from c4.cli import main

    assert main(["faults", "holds", "--collector", "127.0.0.1:9"]) == 1
    assert "127.0.0.1:9" in capsys.readouterr().err
