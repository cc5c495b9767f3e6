"""The throwaway PostgreSQL the lake tests use (Debian's packages, loopback)."""

from c4.sim.postgres import LocalPostgres as Postgres

__all__ = ["Postgres"]
