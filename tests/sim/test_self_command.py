"""C4's own child processes start from any working directory, even one holding a folder named ``c4``."""

from __future__ import annotations

import subprocess

from c4.self_command import C4_COMMAND
from c4.sim.procs import start_collector


def test_a_c4_folder_in_the_working_directory_does_not_shadow_the_package(tmp_path, monkeypatch):
    """After `git clone ... c4`, the clone's parent holds `c4/`: `python -m c4.cli` imported it (no
    __version__) and every child collector or agent died; C4_COMMAND keeps the working directory off the path."""
    (tmp_path / "c4").mkdir()
    monkeypatch.chdir(tmp_path)
    out = subprocess.run([*C4_COMMAND, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("c4 "), out.stderr
    col = start_collector(tmp_path / "work")
    try:
        assert col.proc.poll() is None
    finally:
        col.stop()
