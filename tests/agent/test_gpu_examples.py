"""The shipped fake-NVML scenarios (deploy/examples/nvml/) through `c4 agent --test --nvml-library`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "nvml"


@pytest.mark.parametrize(
    ("model", "throughput", "absent"),
    [
        ("a100", "tx_data_bytes=", "tx_link_bytes=None"),
        ("h100", "tx_data_bytes=", "tx_link_bytes=None"),
        ("b200", "tx_link_bytes=", "tx_data_bytes=None"),
    ],
)
def test_agent_test_runs_each_example(model, throughput, absent):
    path = EXAMPLES / f"{model}.json"
    out = subprocess.run(
        [
            str(Path(sys.executable).with_name("c4")),
            "agent",
            "--test",
            "--samplers",
            "gpu",
            "--nvml-library",
            "c4.sim.fake_nvml:FakeNvml",
            "--nvml-library-arg",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "### table gpu_samples (8 rows)" in out and "### table gpu_events (1 rows)" in out
    link_rows = out.split("### table nvlink_gpu_samples")[1].split("###")[0]
    assert f"{throughput}None" not in link_rows and throughput in link_rows and absent in link_rows
    assert "gpu_index=3" in out.split("### table gpu_events")[1]  # the Xid reached its GPU
