"""Shared test paths and helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real captured data beside the project (see ../shared/fixtures/README.md).
SHARED_FIXTURES = (REPO_ROOT / ".." / "shared" / "fixtures").resolve()


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """Path to ../shared/fixtures; the tests need it, so its absence is an error, not a skip."""
    assert SHARED_FIXTURES.is_dir(), f"{SHARED_FIXTURES} missing: clone the project beside shared/"
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def sysfs_fixture(shared_fixtures: Path) -> Path:
    """The captured /sys tree (mlx5, mlx4, hfi1, netdevs)."""
    return shared_fixtures / "sysfs-procfs" / "sys"


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    """A test that fails half-way leaves no collector or agent running (they ate the CPU of later tests).

    Processes of module- or session-scoped fixtures were started before this fixture: they are kept.
    """
    from testkit.procs import kill_leftovers, started_count

    mark = started_count()
    yield
    kill_leftovers(mark)
