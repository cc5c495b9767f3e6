"""C4 agent room."""
