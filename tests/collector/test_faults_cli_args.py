"""`c4 faults` argument handling that needs no collector."""

from __future__ import annotations


def test_faults_actions_take_the_collector_after_the_action_too(capsys):
    """`c4 faults hold --collector X` reaches X (it was 'unrecognized arguments')."""
    from c4.cli import main

    assert main(["faults", "holds", "--collector", "127.0.0.1:9"]) == 1
    assert "127.0.0.1:9" in capsys.readouterr().err


def test_a_collector_address_that_is_not_host_port_is_refused(capsys):
    """Port 99999 wrapped to 34463 and a missing port meant 443; both are refused, naming the address."""
    from c4.cli import main

    for bad in ("127.0.0.1:99999", "127.0.0.1", "host:http"):
        assert main(["goodput", "--collector", bad]) == 1
        err = capsys.readouterr().err
        assert f"collector address '{bad}' is not HOST:PORT" in err, err


def test_a_missing_config_file_is_named_in_one_line(capsys, monkeypatch):
    """$C4_CONFIG naming no file: `c4 faults list` said 'ConfigError: ... (--log-level DEBUG shows where)'."""
    from c4.cli import main

    monkeypatch.setenv("C4_CONFIG", "/nonexistent/c4.toml")
    assert main(["faults", "list", "--collector", "127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err == "c4 faults: query settings: config file /nonexistent/c4.toml not found\n", err
