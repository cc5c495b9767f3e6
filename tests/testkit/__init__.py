"""Helpers for tests that run real c4 processes on loopback."""
