"""Every ``c4`` process turns gRPC's fork support off before gRPC starts (its children are started with a
preexec_fn, and gRPC's fork handlers in such a child once aborted a collector), unless the user set it."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "import os, sys; import c4.cli; print(os.environ.get('GRPC_ENABLE_FORK_SUPPORT'), 'grpc' in sys.modules)"
)


def _run(env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-P", "-c", PROBE], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def test_the_c4_entry_point_turns_grpc_fork_support_off_before_grpc_is_imported():
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    assert _run(env) == "false False"


def test_a_users_own_setting_is_kept():
    assert _run({**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "true"}) == "true False"
