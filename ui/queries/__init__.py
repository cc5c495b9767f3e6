"""The SQL behind each dashboard page (pure functions returning SQL text; the bench times the same strings)."""
