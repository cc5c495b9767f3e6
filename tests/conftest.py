"""Shared test paths and helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests start collectors with a preexec_fn (die_with_parent), so Python forks rather than vforks, and
# gRPC's fork handlers ran in the child between fork and exec while the test process's own gRPC threads
# were busy: a CI run lost a collector that way, exit -6 before serving, its log saying "Epoll1Poller
# encountered epoll_wait error: Bad file descriptor". No test process needs gRPC to survive a fork: set
# before any test module imports grpc (it reads this when it starts).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real captured data, kept in the repository with its provenance (tests/fixtures/README.md).
FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def sysfs_fixture() -> Path:
    """The captured /sys tree (mlx5, mlx4, hfi1, netdevs)."""
    return FIXTURES / "sysfs-procfs" / "sys"


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    """A test that fails half-way leaves no collector or agent running (they ate the CPU of later tests).

    Processes of module- or session-scoped fixtures were started before this fixture: they are kept.
    """
    from testkit.procs import kill_leftovers, started_count

    mark = started_count()
    yield
    kill_leftovers(mark)
