"""`c4 demo` brings up a collector and an agent whose rows show up in SQL."""

import subprocess

from testkit.procs import C4, free_port


def test_demo_runs_and_shows_rows(tmp_path):
    out = subprocess.run(
        C4
        + [
            "demo",
            "--workdir",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--duration-s",
            "12",
            "--nodes",
            "2",
            "--every-s",
            "2",
            "--no-ui",  # the dashboard has its own tests (tests/ui)
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    assert "agent_heartbeat" in out.stdout and "host_cpu" in out.stdout
    # the last summary counted rows for every table the agent sends
    last = out.stdout.rsplit("┌", 1)[-1]
    counts = {
        line.split("┆")[0].strip("│ "): int(line.split("┆")[1])
        for line in last.splitlines()
        if "┆" in line and line.split("┆")[1].strip().isdigit()
    }
    assert counts["host_cpu"] > 0 and counts["agent_heartbeat"] > 0, counts
    assert counts["gpu_samples"] > 0 and counts["ib_port_samples"] > 0, counts
    assert counts["nccl_collectives"] > 0 and counts["nccl_connections"] > 0, counts
    assert (tmp_path / "collector" / "c4.duckdb").exists()
