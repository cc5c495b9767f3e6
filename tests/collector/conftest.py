"""Fixtures shared by the collector's tests."""

from __future__ import annotations

import pytest
from testkit.postgres import Postgres


@pytest.fixture
def postgres():
    """A real PostgreSQL (Debian's packages) for a lake's catalog, stopped after the test."""
    pg = Postgres().start()
    yield pg
    pg.stop()
